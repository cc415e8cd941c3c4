#!/bin/sh
# check_readme_catches_edit.sh BENCH_REPORT SOURCE_DIR
#
# A README whose headline table has one number changed by hand must fail
# `bench_report --check-readme`, which must name the headline section. (That the README as
# committed passes is the other test.) The edited copy goes through stdin, so that its links
# are relative to SOURCE_DIR as the README's are.
set -eu
cd "$2"
edit() {
    awk '/<!-- report:headline -->/ { inside = 1 }
         /<!-- \/report:headline -->/ { inside = 0 }
         inside && !done && /[0-9] (ns|µs|ms)/ { sub(/[0-9] (ns|µs|ms)/, "9&"); done = 1 }
         { print }' README.md
}
if edit | cmp -s - README.md; then
    echo "no number found to edit in README.md's headline section" >&2
    exit 1
fi
edit | "$1" --check-readme - 2>&1 | tee /dev/stderr | grep -q "section report:headline differs"
