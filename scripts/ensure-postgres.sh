#!/usr/bin/env bash
# The test suite covers PostgreSQL for real: start a local server when none answers on
# 127.0.0.1:5432 (Debian's package, trust auth, database "test"), as CI machines without one need.
set -euo pipefail
if pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "No PostgreSQL on 127.0.0.1:5432; PostgreSQL tests are skipped (run as root to start one)."
    exit 0
fi
if ! command -v pg_ctlcluster >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
fi
version=$(ls /usr/lib/postgresql | sort -V | tail -1)
if ! pg_lsclusters -h | grep -q .; then
    pg_createcluster "$version" main >/dev/null
fi
cluster=$(pg_lsclusters -h | head -1 | awk '{print $1" "$2}')
conf=/etc/postgresql/${cluster% *}/${cluster#* }
sed -i 's/^\(local\|host\)\(.*\)\(peer\|scram-sha-256\|md5\)$/\1\2trust/' "$conf/pg_hba.conf"
pg_ctlcluster $cluster start || pg_ctlcluster $cluster restart
for _ in $(seq 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
su postgres -c "psql -qtAc \"SELECT 1 FROM pg_database WHERE datname='test'\"" | grep -q 1 \
    || su postgres -c "createdb test"
echo "PostgreSQL started on 127.0.0.1:5432"
