#!/usr/bin/env bash
# Installs Debian's Chromium (once) for the tests that open the HTML report in a real browser.
#
# Playwright drives it (executable_path=/usr/bin/chromium): its own browser download is not
# reachable from here, Debian's package is.
set -euo pipefail

if [[ -x /usr/bin/chromium ]]; then
    exit 0
fi
if [[ "$(id -u)" != "0" ]]; then
    echo "tools/chromium.sh: /usr/bin/chromium is missing; install Debian's chromium package as root" >&2
    exit 1
fi
DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null \
    || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null; }
/usr/bin/chromium --version
