#!/usr/bin/env bash
# Checks the Docker files without a Docker engine (none runs on our
# machines): docker-compose validates docker-compose.yml, dockerfilelint
# (npm, installed into $1 on first use) lints the Dockerfile, and haproxy
# checks haproxy.cfg. Exit 0 pass, 1 fail, 77 when a tool is missing.
#
#   docker/validate.sh TOOLS_DIR
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
tools=${1:?usage: validate.sh TOOLS_DIR}

for tool in docker-compose npm haproxy; do
    if ! command -v "$tool" >/dev/null && [[ ! -x /usr/sbin/$tool ]]; then
        echo "SKIP: $tool is missing (scripts/deps.sh installs it)"
        exit 77
    fi
done

echo "+ docker-compose -f docker/docker-compose.yml config -q"
docker-compose -f "$here/docker-compose.yml" config -q

lint=$tools/node_modules/.bin/dockerfilelint
if [[ ! -x $lint ]]; then
    echo "+ npm install --prefix $tools dockerfilelint"
    npm install --prefix "$tools" --no-audit --no-fund --loglevel=error dockerfilelint >/dev/null
fi
echo "+ dockerfilelint docker/Dockerfile"
"$lint" "$here/Dockerfile"

echo "+ haproxy -c -f docker/haproxy.cfg"
PATH=$PATH:/usr/sbin haproxy -c -q -f "$here/haproxy.cfg"
echo "PASS: the compose file, the Dockerfile and the HAProxy configuration are valid"
