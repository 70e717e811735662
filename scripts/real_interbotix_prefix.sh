#!/usr/bin/env bash
# Print the first prefix on AMENT_PREFIX_PATH with a real (Interbotix's) interbotix_xs_msgs;
# nothing when there is none or only efm's stand-in (package.xml says "efm stand-in").
# scripts/setup.sh builds the stand-in only when this prints nothing.
set -euo pipefail
IFS=: read -r -a prefixes <<< "${AMENT_PREFIX_PATH:-}"
for prefix in "${prefixes[@]}"; do
  xml="$prefix/share/interbotix_xs_msgs/package.xml"
  if [ -n "$prefix" ] && [ -f "$xml" ] && ! grep -q "efm stand-in" "$xml"; then
    echo "$prefix"
    exit 0
  fi
done
