#!/bin/sh
# Start Redis with the default user disabled and one ACL user, whose password comes from
# the compose secret redis_password. The ACL file lives in tmpfs, never in the volume.
set -eu
umask 077
password="$(cat /run/secrets/redis_password)"
if [ -z "$password" ]; then
  echo "error: secret redis_password is empty; set REDIS_PASSWORD in .env" >&2
  exit 1
fi
printf 'user default off\nuser %s on >%s ~saodf:* resetchannels &saodf:* +@all -@dangerous +info +ping\n' \
  "${REDIS_USER:-saodf}" "$password" > /tmp/users.acl
exec redis-server \
  --aclfile /tmp/users.acl \
  --protected-mode yes \
  --maxmemory "${REDIS_MAXMEMORY:-256mb}" \
  --maxmemory-policy allkeys-lru \
  --appendonly yes \
  --dir /data
