#!/usr/bin/env bash
# Packs what the GPU machine needs under .gpu/ (ignored by git): the compiled sources, bench scripts and the
# production node_modules. The node binary goes there once per checkout (.gpu/node.xz, see the device notes).
set -euo pipefail
cd "$(dirname "$0")/.."
# GPU_DIR: where to pack (default .gpu); several people packing at once each use their own (.gpu-<name>)
D=${GPU_DIR:-.gpu}
mkdir -p "$D"
[ -f "$D/node.xz" ] || cp .gpu/node.xz "$D/node.xz"
rm -rf "$D/build" "$D/node_modules"
npx tsc -p tsconfig.gpu.json --outDir "$D/build" > /dev/null || echo "note: type errors (emitted anyway)"
mkdir -p "$D/node_modules"
# only what the build/run/bench path needs (the server's dependencies stay behind: the carry limit is 64 MiB)
npm ls --omit=dev --all --parseable 2>/dev/null | tail -n +2 | grep -E '/node_modules/(koffi|@koromix|@huggingface|protobufjs|@protobufjs|long|commander|fflate|cli-progress|string-width|strip-ansi|ansi-regex|emoji-regex|is-fullwidth-code-point)(/|$)' | while read -r dir; do
  rel="${dir#"$PWD"/node_modules/}"
  mkdir -p "$D/node_modules/$(dirname "$rel")"
  cp -r "$dir" "$D/node_modules/$rel"
done
rm -rf "$D/node_modules/@koromix/koffi-linux-x64/musl_x64"
du -sh "$D"
