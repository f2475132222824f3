# Sourced by the launch scripts: torchrun and python from the active virtualenv, or from this checkout's .venv
# (what `make setup` creates) when none is active, so the scripts run the same whether or not it was activated.
repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if ! command -v torchrun >/dev/null 2>&1; then
  if [[ -x "$repo_root/.venv/bin/torchrun" ]]; then
    PATH="$repo_root/.venv/bin:$PATH"
  else
    echo "$(basename "$0"): torchrun not found: run \`make setup\` (or setup-gpu), then \`source .venv/bin/activate\`" >&2
    exit 2
  fi
fi
