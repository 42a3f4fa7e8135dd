"""How many cores a server used while a command ran (Linux: reads /proc).

    python3 book/examples/cores.py PID -- cargo run -q --release --bin loadgen -- URL -c 4

Runs the command after `--`, then prints the CPU time the process PID and
its threads spent (user + system) divided by the wall time: 1.00 means one
core busy all along. A process whose threads wait for the GIL cannot go far
above 1.00, however many threads it has.
"""

import os
import subprocess
import sys
import time


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    utime, stime = int(fields[11]), int(fields[12])
    return (utime + stime) / os.sysconf("SC_CLK_TCK")


def main():
    pid = int(sys.argv[1])
    command = sys.argv[sys.argv.index("--") + 1:]
    cpu, wall = cpu_seconds(pid), time.perf_counter()
    subprocess.run(command, check=True)
    cpu, wall = cpu_seconds(pid) - cpu, time.perf_counter() - wall
    print(f"server pid {pid}: {cpu:.1f} s of CPU in {wall:.1f} s: {cpu / wall:.2f} cores "
          f"(load average {os.getloadavg()[0]:.1f})")


if __name__ == "__main__":
    main()
