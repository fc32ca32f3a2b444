#!/bin/bash
# Submit N dependent jobs of one run: each starts when the previous one ended, for whatever
# reason, and resumes the run where it stopped. Jobs left over after the run finished exit 0
# at once ("already finished ... nothing to resume").
#
#   scenarios/slurm/chain.sh 5                       # five 24 h jobs of the default scenario
#   SCENARIO=scenarios/advection_multi.py RUN_DIR=runs/multi scenarios/slurm/chain.sh 3
set -euo pipefail
n=${1:-4}
here=$(cd "$(dirname "$0")" && pwd)
prev=$(EVO_ENGINE_REQUEUE=0 sbatch --parsable --export=ALL,EVO_ENGINE_REQUEUE=0 "$here/evo_engine.sbatch")
echo "job 1: $prev"
for i in $(seq 2 "$n"); do
  prev=$(sbatch --parsable --dependency=afterany:"$prev" --export=ALL,EVO_ENGINE_REQUEUE=0 "$here/evo_engine.sbatch")
  echo "job $i: $prev (after the previous one)"
done
