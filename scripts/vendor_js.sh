#!/usr/bin/env bash
# Serve MathJax and the Jupyter widget manager from the site itself, so that the built
# book shows its equations and widgets with no network at view time (CDNs otherwise).
# Fetches pinned npm packs (the npm registry is the only network this needs) into
# _static_vendor/, which _config.yml lists in html_static_path.
set -euo pipefail
cd "$(dirname "$0")/.."
out=_static_vendor
[ -f "$out/.complete" ] && exit 0
command -v npm >/dev/null || { echo "vendor_js.sh: npm (Node.js) is needed to fetch MathJax and the widget manager" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent mathjax@3.2.2 @jupyter-widgets/html-manager@1.0.6 requirejs@2.3.8 >/dev/null)
rm -rf "$out" && mkdir -p "$out/mathjax" "$out/html-manager"
tar xzf "$tmp"/mathjax-3.2.2.tgz -C "$tmp" package/es5
cp -r "$tmp"/package/es5/. "$out/mathjax/"
rm -rf "$tmp/package"
tar xzf "$tmp"/jupyter-widgets-html-manager-1.0.6.tgz -C "$tmp" package/dist
find "$tmp/package/dist" -name '*.map' -delete
cp -r "$tmp"/package/dist/. "$out/html-manager/"
rm -rf "$tmp/package"
tar xzf "$tmp"/requirejs-2.3.8.tgz -C "$tmp" package/require.js
cp "$tmp/package/require.js" "$out/require.js"
touch "$out/.complete"
echo "vendored MathJax 3.2.2, html-manager 1.0.6, require.js 2.3.8 into $out/"
