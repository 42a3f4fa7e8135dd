"""The memory of stage 3's master and workers, from its stats server.

    python3 book/examples/worker_memory.py 127.0.0.1:9191

RSS counts every page a process maps, shared or not; PSS divides each shared
page among the processes that share it, so the PSS of all processes adds up
to the memory they really use together.
"""

import json
import sys
import urllib.request



def master_pss_kib(pid):
    """The master's PSS, from /proc (the stats report only its RSS)."""
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Pss:"):
                return int(line.split()[1])
    return 0


stats = json.load(urllib.request.urlopen(f"http://{sys.argv[1]}/"))
master = stats["master"]
master_pss = master_pss_kib(master["pid"])
print(f"master  pid {master['pid']:>7}  RSS {master['rss_kib'] / 1024:6.1f} MiB  "
      f"PSS {master_pss / 1024:6.1f} MiB  (preload: {master['preload']})")
workers = stats["workers"]
for w in workers:
    print(f"worker  pid {w['pid']:>7}  RSS {w['rss_kib'] / 1024:6.1f} MiB  PSS {w['pss_kib'] / 1024:6.1f} MiB")
total = (master_pss + sum(w["pss_kib"] for w in workers)) / 1024
print(f"master + {len(workers)} workers: PSS {total:.1f} MiB in all")
