"""A scripted command agent for loop tests: `agent.py PLAN.json`, prompt on stdin.

It reads its iteration from the prompt ("iteration N"), appends N to calls.log next to the plan,
and does what the plan says for N (or for "*"): sleep, write files (relative to its workdir),
run a command, fail with an exit code, echo the prompt, and print `say` (by default a line
that differs enough from one iteration to the next not to look stalled).
"""

import hashlib
import json
import re
import subprocess
import sys
import time
from pathlib import Path

plan_path = Path(sys.argv[1])
prompt = sys.stdin.read()
number = int(re.search(r"iteration (\d+)", prompt, re.IGNORECASE).group(1))
with (plan_path.parent / "calls.log").open("a") as calls:
    calls.write(f"{number}\n")
plan = json.loads(plan_path.read_text())
step = plan.get(str(number), plan.get("*", {}))
time.sleep(step.get("sleep", plan.get("sleep", 0)))
for name, text in step.get("write", {}).items():
    Path(name).write_text(text)
if "run" in step:
    subprocess.run(step["run"], check=True, capture_output=True)
if "exit" in step:
    sys.exit(f"failing on purpose at iteration {number}")
if step.get("echo"):
    print(prompt)
default = f"worked on iteration {number}: {hashlib.sha256(bytes([number])).hexdigest()}"
print(step.get("say", default).replace("{n}", str(number)))
