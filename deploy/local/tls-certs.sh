#!/usr/bin/env bash
# Test certificates for a TLS broker on 127.0.0.1, made with openssl in DIR:
#
#   ca.pem, ca-key.pem            a certificate authority the broker and clients trust
#   server.pem, server-key.pem    the broker's certificate (localhost, 127.0.0.1), signed by it
#   client.pem, client-key.pem    a client certificate, signed by it
#   expired.pem, expired-key.pem  a client certificate of the same CA that expired in 2020
#   other-ca.pem                  a CA nobody trusts (a client holding it must refuse the broker)
#
#   deploy/local/tls-certs.sh DIR
#
# For development and tests only: the keys are written unencrypted. Existing files are kept.
set -euo pipefail

dir=${1:?usage: $0 DIR}
mkdir -p "$dir"
cd "$dir"
# Kept while they are good for another day.
if [[ -s ca.pem && -s server.pem && -s client.pem && -s expired.pem && -s other-ca.pem ]] \
    && openssl x509 -checkend 86400 -noout -in ca.pem >/dev/null && openssl x509 -checkend 86400 -noout -in server.pem >/dev/null \
    && openssl x509 -checkend 86400 -noout -in client.pem >/dev/null; then
    exit 0
fi
rm -rf ca-db ./*.pem ca.cnf

quiet() { "$@" >/dev/null 2>&1 || { echo "tls-certs: $* failed" >&2; "$@"; exit 1; }; }

quiet openssl req -x509 -newkey rsa:2048 -nodes -keyout ca-key.pem -out ca.pem -days 30 -subj "/CN=Kiln test CA"
quiet openssl req -x509 -newkey rsa:2048 -nodes -keyout other-ca-key.pem -out other-ca.pem -days 30 -subj "/CN=Someone else's CA"

printf 'subjectAltName = DNS:localhost, IP:127.0.0.1\nextendedKeyUsage = serverAuth\n' >server.ext
quiet openssl req -newkey rsa:2048 -nodes -keyout server-key.pem -out server.csr -subj "/CN=localhost"
quiet openssl x509 -req -in server.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -out server.pem -days 30 -extfile server.ext

printf 'extendedKeyUsage = clientAuth\n' >client.ext
quiet openssl req -newkey rsa:2048 -nodes -keyout client-key.pem -out client.csr -subj "/CN=kiln-test-client"
quiet openssl x509 -req -in client.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -out client.pem -days 30 -extfile client.ext

# An expired certificate needs dates in the past, which only `openssl ca` sets.
mkdir -p ca-db
: >ca-db/index.txt
echo 1000 >ca-db/serial
cat >ca.cnf <<CONF
[ca]
default_ca = test
[test]
dir = $PWD/ca-db
database = \$dir/index.txt
serial = \$dir/serial
new_certs_dir = \$dir
default_md = sha256
policy = anything
copy_extensions = none
[anything]
commonName = supplied
[client]
extendedKeyUsage = clientAuth
CONF
quiet openssl req -newkey rsa:2048 -nodes -keyout expired-key.pem -out expired.csr -subj "/CN=kiln-expired-client"
quiet openssl ca -batch -config ca.cnf -cert ca.pem -keyfile ca-key.pem -in expired.csr -out expired.pem \
    -startdate 20200101000000Z -enddate 20200102000000Z -extensions client -notext
rm -f ./*.csr ./*.ext ca.srl
chmod 600 ./*-key.pem
