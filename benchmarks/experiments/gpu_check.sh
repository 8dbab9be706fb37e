#!/usr/bin/env bash
# One call checks the learner on a GPU machine (issue 17): installs the carried wheels, trains `robot` with
# --device cuda for 100k steps, trains Pong with 32 envs for 5 minutes, prints steps/s, the score curve and
# the GPU utilisation, evaluates both CUDA-trained checkpoints on the CPU, and writes a JSON summary.
#
#   bash benchmarks/experiments/gpu_wheels.sh                      # here, once: the wheels into .gpu-wheels (gitignored)
#   bash benchmarks/experiments/gpu_check.sh                       # on the GPU machine (device tool: carry [".gpu-wheels"])
#   bash benchmarks/experiments/gpu_check.sh --device cpu          # the CPU dry run: same steps, tiny budgets (~1 min)
#
# Budgets (env vars): ROBOT_STEPS (100000; dry run 2048), PONG_SECONDS (300, startup included; dry run 180 at
# most), PONG_STEPS (no limit; dry run 2048), PONG_ENVS (32; dry run 4). The JSON goes to
# $OUT/gpu_check.json when OUT is set (the device tool's output folder), else to $RESULTS (default /tmp/gpu_check). Runs go to $RUNS (default /tmp/gpu_check_runs). Exit 0 only when
# every step worked: training on the device, evaluation of each checkpoint on the CPU.
set -uo pipefail
DEVICE=cuda
while [ $# -gt 0 ]; do
  case "$1" in
    --device) DEVICE="$2"; shift 2 ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "gpu_check.sh: unknown argument '$1'; expected --device cuda|cpu" >&2; exit 2 ;;
  esac
done
case "$DEVICE" in cuda|cpu) ;; *) echo "gpu_check.sh: --device must be cuda or cpu, got '$DEVICE'" >&2; exit 2 ;; esac
cd "$(dirname "$0")/../.."
ROOT=$PWD
if [ "$DEVICE" = cpu ]; then DRY=1; else DRY=0; fi
ROBOT_STEPS=${ROBOT_STEPS:-$([ $DRY = 1 ] && echo 2048 || echo 100000)}
PONG_SECONDS=${PONG_SECONDS:-$([ $DRY = 1 ] && echo 180 || echo 300)}
PONG_STEPS=${PONG_STEPS:-$([ $DRY = 1 ] && echo 2048 || echo 10000000)}
PONG_ENVS=${PONG_ENVS:-$([ $DRY = 1 ] && echo 4 || echo 32)}
RESULTS=${OUT:-${RESULTS:-/tmp/gpu_check}}
RUNS=${RUNS:-/tmp/gpu_check_runs}
mkdir -p "$RESULTS" && rm -rf "$RUNS" && mkdir -p "$RUNS"
PY=${PYTHON:-}
if [ -z "$PY" ]; then if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi; fi
export PYTHONUNBUFFERED=1
T0=$(date +%s)
say() { echo "[gpu_check $(( $(date +%s) - T0 ))s] $*"; }

# 1. Packages: install the carried wheels only where they are missing (the GPU image has torch, no gymnasium).
if ! "$PY" -c "import gymnasium, stable_baselines3, ale_py, mujoco, pydantic" 2>/dev/null; then
  if ! ls .gpu-wheels/*.whl >/dev/null 2>&1; then
    echo "gpu_check.sh: gymnasium/SB3/ale-py/mujoco/pydantic are missing and .gpu-wheels/ holds no wheels; build" \
         "them here with 'bash benchmarks/experiments/gpu_wheels.sh' and carry .gpu-wheels" >&2; exit 2
  fi
  say "installing $(ls .gpu-wheels/*.whl | wc -l) wheels offline into /tmp/site"
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    .gpu-wheels/*.whl || { echo "gpu_check.sh: installing .gpu-wheels failed" >&2; exit 1; }
  export PYTHONPATH=/tmp/site:$ROOT
fi
"$PY" - "$DEVICE" <<'PY' | tee "$RUNS/env.json" || exit 1
import json, sys, torch
dev = sys.argv[1]
if dev == "cuda" and not torch.cuda.is_available():
    sys.exit("gpu_check.sh: --device cuda but torch sees no CUDA device")
print(json.dumps({"torch": torch.__version__, "device": dev,
                  "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}))
PY

SMI_PID=""
smi_start() {  # GPU utilisation and memory every 0.5 s into $1
  if command -v nvidia-smi >/dev/null && [ "$DEVICE" = cuda ]; then
    nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader,nounits -lms 500 > "$1" 2>/dev/null &
    SMI_PID=$!
  else : > "$1"; fi
}
smi_stop() { if [ -n "$SMI_PID" ]; then kill "$SMI_PID" 2>/dev/null; wait "$SMI_PID" 2>/dev/null; SMI_PID=""; fi; }
trap smi_stop EXIT

# 2. robot on the device, then its checkpoint evaluated on the CPU.
say "robot: $ROBOT_STEPS steps, --device $DEVICE"
smi_start "$RUNS/smi_robot.csv"
s=$(date +%s%N)
"$PY" train.py --env robot --device "$DEVICE" --timesteps "$ROBOT_STEPS" --seed 0 --quiet --run-dir "$RUNS/robot" \
  --set eval.every=0 > "$RUNS/robot_train.log" 2>&1; RC_ROBOT=$?
echo $(( ($(date +%s%N) - s) / 1000000 )) > "$RUNS/robot_wall"
smi_stop
tail -3 "$RUNS/robot_train.log"
say "robot: evaluating the $DEVICE checkpoint on the CPU (CUDA_VISIBLE_DEVICES='')"
CUDA_VISIBLE_DEVICES="" "$PY" evaluate.py "$RUNS/robot" --episodes "$([ $DRY = 1 ] && echo 3 || echo 20)" \
  --json "$RUNS/robot_eval.json" > "$RUNS/robot_eval.log" 2>&1; RC_ROBOT_EVAL=$?
tail -2 "$RUNS/robot_eval.log"

# 3. Pong (configs/game.yaml: play field cropped, 42x42, small CNN) for PONG_SECONDS with PONG_ENVS envs, stopped by SIGINT
# (which writes the final checkpoint), then its checkpoint evaluated on the CPU.
VEC=$([ "$PONG_ENVS" -ge 8 ] && echo subproc || echo dummy)
BATCH=$(( PONG_ENVS * 128 / 4 ))
EVAL_EVERY=$([ $DRY = 1 ] && echo 2048 || echo 200000)
say "pong: ${PONG_SECONDS}s or $PONG_STEPS steps, $PONG_ENVS envs ($VEC), batch $BATCH, --device $DEVICE"
smi_start "$RUNS/smi_pong.csv"
s=$(date +%s%N)
timeout -s INT "$PONG_SECONDS" "$PY" train.py --env game --device "$DEVICE" --seed 0 --run-dir "$RUNS/pong" \
  --timesteps "$PONG_STEPS" --num-envs "$PONG_ENVS" --set train.vec_env=$VEC --set agent.batch_size=$BATCH \
  --set train.log_every=20000 \
  --set eval.every=$EVAL_EVERY --set eval.episodes=3 --set train.checkpoint_every=1000000 --quiet \
  > "$RUNS/pong_train.log" 2>&1; RC_PONG=$?
echo $(( ($(date +%s%N) - s) / 1000000 )) > "$RUNS/pong_wall"
smi_stop
tail -4 "$RUNS/pong_train.log"
say "pong: evaluating the $DEVICE checkpoint on the CPU"
CUDA_VISIBLE_DEVICES="" timeout 120 "$PY" evaluate.py "$RUNS/pong" --episodes "$([ $DRY = 1 ] && echo 1 || echo 3)" \
  --json "$RUNS/pong_eval.json" > "$RUNS/pong_eval.log" 2>&1; RC_PONG_EVAL=$?
tail -2 "$RUNS/pong_eval.log"

# 4. The summary: steps/s, the curve from TensorBoard, GPU utilisation, CPU evaluations -> JSON.
"$PY" - "$RUNS" "$RESULTS/gpu_check.json" "$RC_ROBOT" "$RC_ROBOT_EVAL" "$RC_PONG" "$RC_PONG_EVAL" <<'PY'
import json, os, sys
from pathlib import Path
runs, out = Path(sys.argv[1]), Path(sys.argv[2])
rc = dict(zip(("robot_train", "robot_eval_cpu", "pong_train", "pong_eval_cpu"), map(int, sys.argv[3:7])))

def scalars(run, tag):
    try:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
        acc = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0}); acc.Reload()
        return [[e.step, round(e.value, 3)] for e in acc.Scalars(tag)] if tag in acc.Tags()["scalars"] else []
    except Exception as e:  # the summary must still be written
        return [f"unreadable: {type(e).__name__}: {e}"]

def util(csv):
    rows = [ln.split(",") for ln in Path(csv).read_text().splitlines() if ln.strip()] if Path(csv).exists() else []
    vals = [(float(a), float(b)) for a, b in rows if a.strip().replace(".", "").isdigit()]
    if not vals:
        return None
    return {"samples": len(vals), "util_mean_pct": round(sum(v[0] for v in vals) / len(vals), 1),
            "util_max_pct": max(v[0] for v in vals), "mem_max_mib": max(v[1] for v in vals)}

def steps(run):
    fps = scalars(run, "time/fps")
    last = max((s for s, _ in (x for x in fps if isinstance(x, list))), default=0)
    return last, [v for _, v in (x for x in fps if isinstance(x, list))]

def ev(path):
    try:
        d = json.loads(Path(path).read_text())
        return {k: d.get(k) for k in ("mean_return", "std_return", "success_rate", "episodes", "random_mean_return")}
    except Exception as e:
        return {"error": f"{type(e).__name__}: {e}"}

res = {"env": json.loads((runs / "env.json").read_text()), "exit_codes": rc}
for name in ("robot", "pong"):
    wall = float((runs / f"{name}_wall").read_text()) / 1000  # ms
    n, fps = steps(runs / name)
    res[name] = {"steps": n, "wall_s": round(wall, 1), "steps_per_s_wall": round(n / wall) if wall else None,
                 "sb3_fps_last": fps[-1] if fps else None, "gpu": util(runs / f"smi_{name}.csv"),
                 "eval_cpu": ev(runs / f"{name}_eval.json"),
                 "curve_rollout": scalars(runs / name, "rollout/ep_rew_mean")[-12:],
                 "curve_eval": scalars(runs / name, "eval/mean_reward")}
ok = rc["robot_train"] == 0 and rc["robot_eval_cpu"] == 0 and rc["pong_train"] in (0, 124, 130) \
    and rc["pong_eval_cpu"] == 0 and (runs / "pong" / "final").exists()
res["ok"] = ok
out.write_text(json.dumps(res, indent=1))
for name in ("robot", "pong"):
    r = res[name]
    print(f"{name}: {r['steps']:,} steps in {r['wall_s']} s = {r['steps_per_s_wall']} steps/s (startup included); "
          f"GPU {r['gpu']}; CPU eval of the checkpoint {r['eval_cpu']}")
    print(f"  score curve (step, ep_rew_mean): {r['curve_rollout']}")
    print(f"  eval curve (step, mean): {r['curve_eval']}")
print(f"ok: {ok}; exit codes {rc}; JSON: {out}")
sys.exit(0 if ok else 1)
PY
RC=$?
if [ -n "${OUT:-}" ]; then  # the device tool brings back at most 8 files from $OUT: the JSON plus these 6
  cp "$RUNS"/robot_train.log "$RUNS"/robot_eval.log "$RUNS"/pong_train.log "$RUNS"/pong_eval.log \
     "$RUNS"/smi_robot.csv "$RUNS"/smi_pong.csv "$OUT"/ 2>/dev/null
fi
say "done"
exit $RC
