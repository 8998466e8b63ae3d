#!/usr/bin/env bash
# Prints a Python 3.11+ interpreter, or explains what is missing and exits 1.
for c in "${PYTHON:-}" python3.13 python3.12 python3.11 python3 python; do
  [ -n "$c" ] || continue
  p=$(command -v "$c" 2>/dev/null) || continue
  if "$p" -c 'import sys, venv; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null; then
    echo "$p"; exit 0
  fi
done
echo "error: Python 3.11 or newer (with venv) is required; none found on PATH" >&2
exit 1
