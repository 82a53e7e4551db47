#!/bin/sh
# Run one benchmark command in N concurrent copies that share its --out:
#
#     sh benchmarks/concurrent.sh 8 python benchmarks/ablation.py --budget cpu --out runs/evidence
#
# Each run of the grid is made by the first copy to claim it (a lock file beside the run, see
# grid.claimed); the others pass on to the next run, so N copies finish the grid about N times
# sooner where there are N idle cores or a GPU with room. Give each copy few threads
# (OMP_NUM_THREADS=1 for CPU runs). Exit status: 1 when any copy failed. Rebuild the tables once
# all are done with the command's --report.
if [ "$#" -lt 2 ] || ! [ "$1" -ge 1 ] 2>/dev/null; then
    echo "usage: concurrent.sh N COMMAND [ARGS...]" >&2
    exit 2
fi
n=$1
shift
pids=""
i=1
while [ "$i" -le "$n" ]; do
    "$@" &
    pids="$pids $!"
    sleep 1  # copies start apart, so each claims a different first run
    i=$((i + 1))
done
status=0
for pid in $pids; do
    wait "$pid" || status=1
done
exit $status
