#!/usr/bin/env bash
# The web UI's browser test drives Debian's chromium (/usr/bin/chromium) through playwright. The README's test
# command runs this first: it installs chromium when it is missing and this runs as root with apt (~25 s), and
# otherwise says why the browser test will skip. It never fails the test command.
if [ -x /usr/bin/chromium ]; then exit 0; fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "+ apt-get install -y chromium (for the web UI's browser test)"
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } && exit 0
fi
echo "note: /usr/bin/chromium is not installed (needs root and apt); the web UI's browser test will skip" >&2
exit 0
