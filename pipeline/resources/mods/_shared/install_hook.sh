# Sourced by a mod's run.sh: install_hook PACKAGE MODULE. Copies spark_posthook.py and the mod's hook
# module next to PACKAGE (the site-packages directory that holds it) and adds a .pth file that imports
# the hook at interpreter start. Idempotent: a second run rewrites the same three files.
install_hook() {
  package=$1 module=$2
  site=$(python3 -c "import importlib.util, os, sys; s = importlib.util.find_spec(sys.argv[1]); \
print(os.path.dirname(os.path.dirname(s.origin)) if s and s.origin else '')" "$package" 2>/dev/null || true)
  if [ -z "$site" ]; then
    echo "$module: $package is not installed in this container's python3" >&2
    exit 1
  fi
  cp spark_posthook.py "$module.py" "$site/"
  echo "import $module" > "$site/$module.pth"
  python3 -c "import $module" || { echo "$module: the hook does not import" >&2; exit 1; }
  echo "$module: installed in $site (active in every new python process)"
}
