#!/usr/bin/env bash
# The GPU speed figures of BENCHMARKS.md ("Speed on a GPU"), old code and new side by side on
# one machine:
#
#   sh benchmarks/gpu.sh OLD_TREE OUT [SCALE]
#
# OLD_TREE: a checkout of the code to compare against (e.g. `git archive REV zodd objectives |
# tar -x -C OLD_TREE`); OUT: where the runs and summary.txt go. Fashion-MNIST is read from
# $ZODD_DATA. SCALE (default 1) divides every iteration count, for a dry run on a CPU
# (DEVICE=cpu). Each step has its own time limit, so one slow step cannot eat the others.
set -u
OLD=$(cd "$1" && pwd); OUT=$2; SCALE=${3:-1}; DEVICE=${DEVICE:-cuda}
NEW=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$OUT"
SUMMARY=$OUT/summary.txt
export PYTHONUNBUFFERED=1
say() { echo "$*" | tee -a "$SUMMARY"; }
zodd() {  # zodd TREE LIMIT ARGS...: the command line of that tree
  local tree=$1 limit=$2; shift 2
  (cd "$tree" && PYTHONPATH="$tree" timeout "$limit" python3 -m zodd.cli "$@")
}
rate() {  # iterations per second between the log's row 100/SCALE and its last row
  python3 - "$1" "$SCALE" <<'EOF'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1] + "/log.jsonl")]
first = rows[max(0, 100 // int(sys.argv[2]) - 1)]
last = rows[-1]
print(f"{(last['step'] - first['step']) / (last['seconds'] - first['seconds']):.1f} it/s "
      f"({last['step']} iterations, {last['seconds']:.1f} s in the loop)")
EOF
}
timed() {  # timed LABEL COMMAND...: wall seconds of a command
  local label=$1 started=$(date +%s.%N); shift
  "$@" > "$OUT/$label.log" 2>&1
  local code=$?
  say "$label: exit $code, $(python3 -c "print(f'{$(date +%s.%N) - $started:.1f}')") s wall"
}

say "device: $(python3 -c "import torch; print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'cpu', torch.__version__)")"
FM="--dataset ${DATASET:-fashion-mnist} --ipc 10 --device $DEVICE --quiet --checkpoint-every 100000"
N=$((600 / SCALE)); R=$((200 / SCALE))

# 1. iterations per second: native DM and the robust updater, 256 real images per class
for tree in OLD NEW; do
  dir=${!tree}
  zodd "$dir" 300 distill $FM --updater native --iterations $N --out "$OUT/native-$tree" \
    && say "native DM IPC 10 ($tree): $(rate "$OUT/native-$tree")"
  zodd "$dir" 300 distill $FM --updater robust --iterations $R --out "$OUT/robust-$tree" \
    && say "robust DM IPC 10 ($tree): $(rate "$OUT/robust-$tree")"
done
zodd "$NEW" 300 distill $FM --updater robust --update-batch 26 --iterations $R \
    --out "$OUT/robust-ub26-NEW" && say "robust DM IPC 10, --update-batch 26 (NEW): $(rate "$OUT/robust-ub26-NEW")"

# 2. a three-network evaluation of the native set, each code its own run (the same set when the
# two runs agree: compared below); the new code twice: the first computes the test clusters,
# the second reads them from the cache
EPOCHS=$((300 / SCALE))
python3 - "$OUT" <<'EOF' | tee -a "$SUMMARY"
import sys, torch
a, b = (torch.load(f"{sys.argv[1]}/native-{v}/synthetic.pt", weights_only=True)["images"]
        for v in ("OLD", "NEW"))
print(f"native sets, old and new code: bitwise equal {torch.equal(a, b)}, "
      f"largest difference {float((a - b).abs().max()):.3g}")
EOF
timed eval-OLD zodd "$OLD" 300 evaluate "$OUT/native-OLD" --seeds 3 --epochs $EPOCHS --device $DEVICE
cp "$OUT/native-OLD/metrics.json" "$OUT/metrics-OLD.json" 2>/dev/null
timed eval-NEW-cold zodd "$NEW" 300 evaluate "$OUT/native-NEW" --seeds 3 --epochs $EPOCHS --device $DEVICE
timed eval-NEW-warm zodd "$NEW" 300 evaluate "$OUT/native-NEW" --seeds 3 --epochs $EPOCHS --device $DEVICE
cp "$OUT/native-NEW/metrics.json" "$OUT/metrics-NEW.json" 2>/dev/null
python3 - "$OUT" <<'EOF' | tee -a "$SUMMARY"
import json, sys
for name in ("OLD", "NEW"):
    try:
        m = json.load(open(f"{sys.argv[1]}/metrics-{name}.json"))
        print(f"evaluation ({name}): acc {m['acc']['mean']:.2f} ± {m['acc']['std']:.2f}, "
              f"cluster_min {m['cluster_min']['mean']:.2f}, per seed "
              f"{[round(r['acc'], 2) for r in m['per_seed']]}")
    except (OSError, KeyError, ValueError) as exc:
        print(f"evaluation ({name}): no metrics ({exc})")
EOF

# 3. zodd's iteration beside the bare floor, every row
(cd "$NEW/benchmarks" && PYTHONPATH="$NEW" timeout 300 python3 speed.py --grid \
    --dataset ${DATASET:-fashion-mnist} --ipc 10 --repeats $((5 / SCALE + 1)) --device $DEVICE \
    --rows "${GRID_ROWS:-}") \
    2>&1 | tee -a "$SUMMARY"

# 4. the CUDA tests (CUDA against CPU runs, step by step)
(cd "$NEW" && PYTHONPATH="$NEW" timeout 240 python3 -m pytest -q -x -p no:cacheprovider \
    tests/test_device.py 2>&1 | tail -5) | tee -a "$SUMMARY"

# 5. is a smaller update batch as good? robust DM, IPC 10, ITER iterations, 3 distillation
# seeds, each set evaluated by one network: the whole real batch against 26 images per class
ITER=$((300 / SCALE))
for seed in 0 1 2; do
  for ub in all 26; do
    flag=$([ $ub = all ] || echo "--update-batch $ub")
    run="$OUT/ub-$ub-s$seed"
    zodd "$NEW" 200 distill $FM --updater robust $flag --iterations $ITER --seed $seed \
        --out "$run" && zodd "$NEW" 120 evaluate "$run" --seeds 1 --epochs $EPOCHS \
        --device $DEVICE --quiet
  done
done
python3 - "$OUT" <<'EOF' | tee -a "$SUMMARY"
import json, statistics, sys
def acc(ub, s, key="acc"):
    return json.load(open(f"{sys.argv[1]}/ub-{ub}-s{s}/metrics.json"))[key]["mean"]
def secs(ub, s):
    rows = open(f"{sys.argv[1]}/ub-{ub}-s{s}/log.jsonl").read().splitlines()
    return json.loads(rows[-1])["seconds"]
seeds = [s for s in range(3) if all(
    __import__("os").path.exists(f"{sys.argv[1]}/ub-{u}-s{s}/metrics.json") for u in ("all", "26"))]
for key in ("acc", "cluster_min"):
    d = [acc("26", s, key) - acc("all", s, key) for s in seeds]
    print(f"--update-batch 26 - all, {key}: per seed {[round(x, 2) for x in d]}, mean "
          f"{statistics.mean(d) if d else float('nan'):+.2f} ± "
          f"{statistics.pstdev(d) if len(d) > 1 else float('nan'):.2f} ({len(d)} seeds); "
          f"all: {[round(acc('all', s, key), 2) for s in seeds]}")
print("distill seconds, all vs 26:", [(round(secs("all", s), 1), round(secs("26", s), 1))
                                       for s in seeds])
EOF
