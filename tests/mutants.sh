#!/bin/sh
# Mutation testing of the engine and the inspectors with cargo-mutants: every mutant (a function body replaced,
# an operator flipped, …) must make `cargo test -p hushwall-core` fail; a mutant that passes ("missed") is a
# behaviour no test holds. See tests/README.md ("Mutation testing") for timing and how to read the results.
#
#   tests/mutants.sh                                  # all of core/src/engine and core/src/inspect (hours)
#   tests/mutants.sh core/src/engine/learn.rs         # one file (or several)
#   tests/mutants.sh --list core/src/inspect/http.rs  # list the mutants, run nothing
#
# Needs `cargo install cargo-mutants --locked`. With MUTANTS_JOBS unset or 1, mutants are built in place in this
# checkout's target/ (the source is restored after each mutant), so do not edit or build here while it runs;
# MUTANTS_JOBS=2 builds in two copies of the tree instead. The `mutants` profile (Cargo.toml) builds
# hushwall-core as `dev` does, an incremental build of about 1.5 s against 24 s in release, with its dependencies
# optimized. The tests then run in under a second without `policy::tests::a_million_names` (2.3 s, and policy is
# not mutated here).
# Results: target/mutants.out/ (missed.txt, caught.txt, timeout.txt, unviable.txt).
set -euf  # -f: the globs below are cargo-mutants' own
cd "$(dirname "$0")/.."
command -v cargo-mutants >/dev/null || { echo "mutants.sh: run 'cargo install cargo-mutants --locked' first" >&2; exit 2; }
list=""
if [ "${1:-}" = "--list" ]; then
    list="--list"
    shift
fi
files=""
if [ "$#" -eq 0 ]; then
    files="--file core/src/engine/** --file core/src/inspect/**"
else
    for f in "$@"; do
        files="$files --file $f"
    done
fi
jobs="${MUTANTS_JOBS:-1}"
where="--in-place"
[ "$jobs" -gt 1 ] && where="--jobs $jobs"
# shellcheck disable=SC2086 # $files and $where are lists of options
exec cargo mutants $list -p hushwall-core $files $where \
    --profile mutants --timeout "${MUTANTS_TIMEOUT:-10}" --build-timeout "${MUTANTS_BUILD_TIMEOUT:-900}" \
    --output target -- -- --skip policy::tests::a_million_names
