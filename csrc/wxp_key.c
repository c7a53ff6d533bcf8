/*
 * wxp_key.c - RSA keys and X.509 certificates from PEM text.
 * SPDX-License-Identifier: MIT
 */
#include "wxp_internal.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/bn.h>
#include <openssl/decoder.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

/* APIv3 keys are RSA-2048; smaller keys are refused as a mistake. */
#define MIN_RSA_BITS 2048

/* A key or certificate is a few kilobytes; larger text is a mistake, and
 * OpenSSL's memory BIO takes an int length. */
#define MAX_PEM_SIZE (1024 * 1024)

/* A serial is at most 20 bytes (RFC 5280, 4.1.2.2); allow some slack. */
#define MAX_SERIAL_BYTES 64

struct wxp_cert {
  X509 *x509;
  wxp_key *key;
  int64_t not_before;
  int64_t not_after;
  char serial[2 * MAX_SERIAL_BYTES + 1];
};

/* One "-----BEGIN <label>-----" block found in PEM text. */
typedef struct pem_block {
  const char *start;
  size_t len;
  char label[40];
} pem_block;

static const char begin_mark[] = "-----BEGIN ";


/* Finds the next PEM block at or after text; 0 when there is none. */
static int next_pem_block(const char *text, size_t len, pem_block *block)
{
  const char *p = text;
  const char *end = text + len;
  const char *label;
  const char *label_end;
  size_t n;

  while ((size_t)(end - p) >= sizeof(begin_mark) - 1) {
    if (memcmp(p, begin_mark, sizeof(begin_mark) - 1) != 0) {
      p++;
      continue;
    }
    label = p + sizeof(begin_mark) - 1;
    label_end = label;
    while (label_end < end && *label_end != '-' && *label_end != '\n')
      label_end++;
    n = (size_t)(label_end - label);
    if (n == 0 || n >= sizeof(block->label)) {
      p = label;
      continue;
    }
    memcpy(block->label, label, n);
    block->label[n] = '\0';
    block->start = p;
    block->len = (size_t)(end - p);
    return 1;
  }
  return 0;
}


/* Rejects text too large to be a key or certificate. */
static wxp_status check_pem_size(size_t len, char *errbuf)
{
  if (len <= MAX_PEM_SIZE)
    return WXP_OK;
  return wxp_fail(errbuf, WXP_EKEY, "PEM text of %zu bytes is too large; a "
                  "key or certificate is a few kilobytes", len);
}


/* Finds the first block with one of the labels; 0 when there is none. */
static int find_pem_block(const char *text, size_t len,
                          const char *const *labels, pem_block *block,
                          char *first_label, size_t first_size)
{
  const char *p = text;
  size_t left = len;
  size_t i;

  first_label[0] = '\0';
  while (next_pem_block(p, left, block)) {
    if (first_label[0] == '\0')
      snprintf(first_label, first_size, "%s", block->label);
    for (i = 0; labels[i]; i++) {
      if (strcmp(block->label, labels[i]) == 0)
        return 1;
    }
    left -= (size_t)(block->start - p) + 1;
    p = block->start + 1;
  }
  return 0;
}


/* Looks for an RFC 1421 header such as Proc-Type before the block ends. */
static int block_has_header(const pem_block *block, const char *header)
{
  static const char end_mark[] = "-----END ";
  size_t n = strlen(header);
  size_t i;

  for (i = 0; i + n <= block->len; i++) {
    if (memcmp(block->start + i, header, n) == 0)
      return 1;
    if (i + sizeof(end_mark) - 1 <= block->len
        && memcmp(block->start + i, end_mark, sizeof(end_mark) - 1) == 0)
      return 0;
  }
  return 0;
}


/* Never asks for a passphrase: an encrypted key must fail, not prompt. */
static int no_passphrase(char *buf, int size, int rwflag, void *u)
{
  (void)buf;
  (void)size;
  (void)rwflag;
  (void)u;
  return -1;
}


wxp_key *wxp_key_wrap(EVP_PKEY *pkey, int is_private)
{
  wxp_key *key = calloc(1, sizeof(*key));

  if (!key)
    return NULL;
  key->pkey = pkey;
  key->is_private = is_private;
  return key;
}


/* Checks that pkey is RSA of a usable size and wraps it. */
static wxp_status accept_rsa(EVP_PKEY *pkey, int is_private, wxp_key **out,
                             const char *what, char *errbuf)
{
  int bits;

  if (EVP_PKEY_get_base_id(pkey) != EVP_PKEY_RSA) {
    EVP_PKEY_free(pkey);
    return wxp_fail(errbuf, WXP_EKEY,
                    "%s is not an RSA key; WeChat Pay APIv3 uses RSA-2048",
                    what);
  }

  bits = EVP_PKEY_get_bits(pkey);
  if (bits < MIN_RSA_BITS) {
    EVP_PKEY_free(pkey);
    return wxp_fail(errbuf, WXP_EKEY,
                    "%s is an RSA key of %d bits; at least %d are required",
                    what, bits, MIN_RSA_BITS);
  }

  *out = wxp_key_wrap(pkey, is_private);
  if (!*out) {
    EVP_PKEY_free(pkey);
    return WXP_ENOMEM;
  }
  return WXP_OK;
}


static const char *const private_labels[] = {
  "PRIVATE KEY", "RSA PRIVATE KEY", "ENCRYPTED PRIVATE KEY", NULL
};


wxp_status wxp_key_load_private(const char *pem, size_t len, wxp_key **out,
                                char *errbuf)
{
  pem_block block;
  char first[40];
  BIO *bio;
  EVP_PKEY *pkey;

  *out = NULL;
  if (check_pem_size(len, errbuf) != WXP_OK)
    return WXP_EKEY;
  if (!find_pem_block(pem, len, private_labels, &block, first,
                      sizeof(first))) {
    if (first[0] == '\0')
      return wxp_fail(errbuf, WXP_EKEY,
                      "private key is not PEM: expected a \"-----BEGIN "
                      "PRIVATE KEY-----\" or \"-----BEGIN RSA PRIVATE "
                      "KEY-----\" block");
    return wxp_fail(errbuf, WXP_EKEY,
                    "expected a private key (\"PRIVATE KEY\" or \"RSA "
                    "PRIVATE KEY\"), found a PEM \"%s\" block", first);
  }

  if (strcmp(block.label, "ENCRYPTED PRIVATE KEY") == 0
      || block_has_header(&block, "Proc-Type: 4,ENCRYPTED"))
    return wxp_fail(errbuf, WXP_EKEY,
                    "private key is protected by a passphrase; remove it "
                    "first, for example with: openssl pkey -in key.pem "
                    "-out plain.pem");

  bio = BIO_new_mem_buf(block.start, (int)block.len);
  if (!bio)
    return wxp_fail_ssl(errbuf, WXP_ENOMEM, "cannot read the private key");
  pkey = PEM_read_bio_PrivateKey(bio, NULL, no_passphrase, NULL);
  BIO_free(bio);
  if (!pkey)
    return wxp_fail_ssl(errbuf, WXP_EKEY,
                        "invalid \"%s\" PEM block", block.label);

  ERR_clear_error();
  return accept_rsa(pkey, 1, out, "private key", errbuf);
}


static const char *const public_labels[] = {
  "PUBLIC KEY", "RSA PUBLIC KEY", "CERTIFICATE", NULL
};


/* Reads the public key of a certificate block. */
static EVP_PKEY *read_cert_key(BIO *bio)
{
  X509 *x509 = PEM_read_bio_X509(bio, NULL, no_passphrase, NULL);
  EVP_PKEY *pkey;

  if (!x509)
    return NULL;
  pkey = X509_get_pubkey(x509);
  X509_free(x509);
  return pkey;
}


/*
 * Reads "PUBLIC KEY" (SPKI) or "RSA PUBLIC KEY" (PKCS#1) PEM.  Any key type
 * is decoded, so that accept_rsa can report that an EC key is not RSA.
 */
static EVP_PKEY *decode_public_key(BIO *bio)
{
  EVP_PKEY *pkey = NULL;
  OSSL_DECODER_CTX *ctx;

  ctx = OSSL_DECODER_CTX_new_for_pkey(&pkey, "PEM", NULL, NULL,
                                      EVP_PKEY_PUBLIC_KEY, NULL, NULL);
  if (!ctx)
    return NULL;
  if (OSSL_DECODER_from_bio(ctx, bio) != 1) {
    EVP_PKEY_free(pkey);
    pkey = NULL;
  }
  OSSL_DECODER_CTX_free(ctx);
  return pkey;
}


wxp_status wxp_key_load_public(const char *pem, size_t len, wxp_key **out,
                               char *errbuf)
{
  pem_block block;
  char first[40];
  BIO *bio;
  EVP_PKEY *pkey;

  *out = NULL;
  if (check_pem_size(len, errbuf) != WXP_OK)
    return WXP_EKEY;
  if (!find_pem_block(pem, len, public_labels, &block, first,
                      sizeof(first))) {
    if (first[0] == '\0')
      return wxp_fail(errbuf, WXP_EKEY,
                      "public key is not PEM: expected a \"-----BEGIN "
                      "PUBLIC KEY-----\" block");
    return wxp_fail(errbuf, WXP_EKEY,
                    "expected a public key (\"PUBLIC KEY\", \"RSA PUBLIC "
                    "KEY\" or \"CERTIFICATE\"), found a PEM \"%s\" block",
                    first);
  }

  bio = BIO_new_mem_buf(block.start, (int)block.len);
  if (!bio)
    return wxp_fail_ssl(errbuf, WXP_ENOMEM, "cannot read the public key");
  if (strcmp(block.label, "CERTIFICATE") == 0)
    pkey = read_cert_key(bio);
  else
    pkey = decode_public_key(bio);
  BIO_free(bio);
  if (!pkey)
    return wxp_fail_ssl(errbuf, WXP_EKEY,
                        "invalid \"%s\" PEM block", block.label);

  ERR_clear_error();
  return accept_rsa(pkey, 0, out, "public key", errbuf);
}


wxp_key *wxp_key_ref(wxp_key *key)
{
  if (EVP_PKEY_up_ref(key->pkey) != 1)
    return NULL;
  return wxp_key_wrap(key->pkey, key->is_private);
}


void wxp_key_free(wxp_key *key)
{
  if (!key)
    return;
  EVP_PKEY_free(key->pkey);
  free(key);
}


int wxp_key_bits(const wxp_key *key)
{
  return EVP_PKEY_get_bits(key->pkey);
}


int wxp_key_is_private(const wxp_key *key)
{
  return key->is_private;
}


int wxp_key_same_public(const wxp_key *a, const wxp_key *b)
{
  int same = EVP_PKEY_eq(a->pkey, b->pkey) == 1;

  ERR_clear_error();
  return same;
}

/* {====================================================================
 * Certificates
 * ===================================================================== */

/* Converts an ASN1_TIME to Unix seconds. */
static int asn1_time_to_unix(const ASN1_TIME *t, int64_t *out)
{
  struct tm tm;

  memset(&tm, 0, sizeof(tm));
  if (ASN1_TIME_to_tm(t, &tm) != 1)
    return 0;
  *out = (int64_t)timegm(&tm);
  return 1;
}


/* Writes the serial byte by byte: Go's "%X" of SerialNumber.Bytes(). */
static int format_serial(const X509 *x509, char *out)
{
  const ASN1_INTEGER *serial = X509_get0_serialNumber(x509);
  BIGNUM *bn = ASN1_INTEGER_to_BN(serial, NULL);
  unsigned char bytes[MAX_SERIAL_BYTES];
  int n;

  if (!bn)
    return 0;
  n = BN_num_bytes(bn);
  if (n > MAX_SERIAL_BYTES || BN_is_negative(bn)) {
    BN_free(bn);
    return 0;
  }
  BN_bn2bin(bn, bytes);
  BN_free(bn);

  if (n == 0) {
    memcpy(out, "00", 3);
    return 1;
  }
  wxp_hex_upper(bytes, (size_t)n, out);
  return 1;
}


void wxp_cert_free(wxp_cert *cert)
{
  if (!cert)
    return;
  X509_free(cert->x509);
  wxp_key_free(cert->key);
  free(cert);
}


/* Fills cert from its X509: key, serial and validity. */
static wxp_status describe_cert(wxp_cert *cert, char *errbuf)
{
  EVP_PKEY *pkey;
  wxp_status rc;

  if (!format_serial(cert->x509, cert->serial))
    return wxp_fail_ssl(errbuf, WXP_EKEY,
                        "certificate serial number is invalid");
  if (!asn1_time_to_unix(X509_get0_notBefore(cert->x509), &cert->not_before)
      || !asn1_time_to_unix(X509_get0_notAfter(cert->x509),
                            &cert->not_after))
    return wxp_fail_ssl(errbuf, WXP_EKEY,
                        "certificate validity dates are invalid");

  pkey = X509_get_pubkey(cert->x509);
  if (!pkey)
    return wxp_fail_ssl(errbuf, WXP_EKEY,
                        "certificate public key is invalid");
  rc = accept_rsa(pkey, 0, &cert->key, "certificate key", errbuf);
  ERR_clear_error();
  return rc;
}


wxp_status wxp_cert_load(const char *pem, size_t len, wxp_cert **out,
                         char *errbuf)
{
  static const char *const labels[] = { "CERTIFICATE", NULL };
  pem_block block;
  char first[40];
  BIO *bio;
  wxp_cert *cert;
  wxp_status rc;

  *out = NULL;
  if (check_pem_size(len, errbuf) != WXP_OK)
    return WXP_EKEY;
  if (!find_pem_block(pem, len, labels, &block, first, sizeof(first))) {
    if (first[0] == '\0')
      return wxp_fail(errbuf, WXP_EKEY,
                      "certificate is not PEM: expected a \"-----BEGIN "
                      "CERTIFICATE-----\" block");
    return wxp_fail(errbuf, WXP_EKEY,
                    "expected a certificate, found a PEM \"%s\" block",
                    first);
  }

  cert = calloc(1, sizeof(*cert));
  if (!cert)
    return WXP_ENOMEM;
  bio = BIO_new_mem_buf(block.start, (int)block.len);
  if (bio)
    cert->x509 = PEM_read_bio_X509(bio, NULL, no_passphrase, NULL);
  BIO_free(bio);
  if (!cert->x509) {
    free(cert);
    return wxp_fail_ssl(errbuf, WXP_EKEY,
                        "invalid \"CERTIFICATE\" PEM block");
  }

  rc = describe_cert(cert, errbuf);
  if (rc != WXP_OK) {
    wxp_cert_free(cert);
    return rc;
  }
  *out = cert;
  return WXP_OK;
}


const char *wxp_cert_serial(const wxp_cert *cert)
{
  return cert->serial;
}


int64_t wxp_cert_not_before(const wxp_cert *cert)
{
  return cert->not_before;
}


int64_t wxp_cert_not_after(const wxp_cert *cert)
{
  return cert->not_after;
}


wxp_key *wxp_cert_key(const wxp_cert *cert)
{
  return cert->key;
}
