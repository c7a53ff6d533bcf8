#!/bin/sh
# Writes the seed corpus of the fuzz targets into fuzz/corpus/: the seeds
# that need the fixed test keys come from MAKE_SEEDS (build-fuzz/make_seeds),
# the key formats from the openssl command.  Run it through
# "make fuzz-seeds"; the hand-written seeds in fuzz/corpus/ are kept.
set -eu

cd "$(dirname "$0")/.."
make_seeds=${1:?usage: fuzz/make-seeds.sh PATH_TO_MAKE_SEEDS}
corpus=fuzz/corpus
keys=$corpus/key_load
work=$(mktemp -d /tmp/wechatpay-seeds.XXXXXX)
trap 'rm -rf "$work"' EXIT

for target in key_load certs_parse certs_wrapped store_verify encoding json
do
    mkdir -p "$corpus/$target"
done
"$make_seeds" "$corpus"

# Key formats the loaders must accept or reject with a clear message.
openssl genpkey -quiet -algorithm RSA -pkeyopt rsa_keygen_bits:2048 \
    -out "$work/rsa.pem"
openssl pkey -in "$work/rsa.pem" -traditional -out "$keys/test-pkcs1-private-key.pem"
openssl pkey -in "$work/rsa.pem" -pubout -out "$keys/test-spki-public-key.pem"
openssl rsa -in "$work/rsa.pem" -RSAPublicKey_out \
    -out "$keys/test-pkcs1-public-key.pem" 2>/dev/null
openssl pkcs8 -topk8 -in "$work/rsa.pem" -v2 aes-256-cbc \
    -passout pass:fuzz -out "$keys/test-encrypted-pkcs8.pem"
openssl rsa -in "$work/rsa.pem" -aes256 -traditional -passout pass:fuzz \
    -out "$keys/test-encrypted-proc-type.pem" 2>/dev/null
sed 's/$/\r/' "$work/rsa.pem" > "$keys/test-pkcs8-private-key-crlf.pem"
head -c 900 "$work/rsa.pem" > "$keys/test-pkcs8-private-key-truncated.pem"
openssl genpkey -quiet -algorithm EC -pkeyopt ec_paramgen_curve:P-256 \
    -out "$keys/test-ec-private-key.pem"
openssl genpkey -quiet -algorithm RSA -pkeyopt rsa_keygen_bits:1024 \
    -out "$keys/test-rsa-1024-private-key.pem"
chmod 644 "$keys"/*.pem
echo "make-seeds: wrote the generated seeds under $corpus/"
