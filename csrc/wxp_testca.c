/*
 * wxp_testca.c - test keys and certificates for the sandbox and the
 * specs.  Nothing here is used to call the real platform.
 * SPDX-License-Identifier: MIT
 */
#include "wxp_internal.h"

#include <string.h>

#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

/* Copies a memory BIO's contents into out. */
static wxp_status bio_to_buf(BIO *bio, wxp_buf *out)
{
  char *data;
  long len = BIO_get_mem_data(bio, &data);

  if (len < 0)
    return WXP_ENOMEM;
  return wxp_buf_append(out, data, (size_t)len);
}


wxp_status wxp_test_key_generate(int bits, wxp_buf *pem, char *errbuf)
{
  EVP_PKEY *pkey;
  BIO *bio;
  wxp_status rc = WXP_OK;

  if (bits < 2048 || bits > 8192)
    return wxp_fail(errbuf, WXP_EINVAL,
                    "key size %d is outside 2048 to 8192 bits", bits);

  pkey = EVP_RSA_gen((unsigned)bits);
  if (!pkey)
    return wxp_fail_ssl(errbuf, WXP_ECRYPTO, "RSA key generation failed");
  bio = BIO_new(BIO_s_secmem());
  if (!bio || PEM_write_bio_PrivateKey(bio, pkey, NULL, NULL, 0, NULL,
                                       NULL) != 1)
    rc = wxp_fail_ssl(errbuf, WXP_ECRYPTO, "cannot write the key as PEM");
  if (rc == WXP_OK)
    rc = bio_to_buf(bio, pem);

  BIO_free(bio);
  EVP_PKEY_free(pkey);
  return rc;
}


/* Reads a private key for issuing; test keys are never encrypted. */
static EVP_PKEY *read_key(const char *pem)
{
  BIO *bio = BIO_new_mem_buf(pem, -1);
  EVP_PKEY *pkey = bio ? PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL)
                       : NULL;

  BIO_free(bio);
  return pkey;
}


static X509 *read_cert(const char *pem)
{
  BIO *bio = BIO_new_mem_buf(pem, -1);
  X509 *x509 = bio ? PEM_read_bio_X509(bio, NULL, NULL, NULL) : NULL;

  BIO_free(bio);
  return x509;
}


static int set_serial(X509 *x509, const char *hex)
{
  BIGNUM *bn = NULL;
  ASN1_INTEGER *serial;
  int ok;

  if (BN_hex2bn(&bn, hex) == 0)
    return 0;
  serial = BN_to_ASN1_INTEGER(bn, NULL);
  BN_free(bn);
  ok = serial && X509_set_serialNumber(x509, serial) == 1;
  ASN1_INTEGER_free(serial);
  return ok;
}


static int add_extension(X509 *x509, X509 *issuer, int nid,
                         const char *value)
{
  X509V3_CTX ctx;
  X509_EXTENSION *ext;
  int ok;

  X509V3_set_ctx(&ctx, issuer, x509, NULL, NULL, 0);
  ext = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
  if (!ext)
    return 0;
  ok = X509_add_ext(x509, ext, -1) == 1;
  X509_EXTENSION_free(ext);
  return ok;
}


static int set_extensions(X509 *x509, X509 *issuer,
                          const wxp_cert_request *req)
{
  char san[256];

  if (!add_extension(x509, issuer, NID_basic_constraints,
                     req->is_ca ? "critical,CA:TRUE" : "CA:FALSE"))
    return 0;
  if (!req->dns_name && !req->ip_address)
    return 1;
  snprintf(san, sizeof(san), "%s%s%s%s%s",
           req->dns_name ? "DNS:" : "", req->dns_name ? req->dns_name : "",
           req->dns_name && req->ip_address ? "," : "",
           req->ip_address ? "IP:" : "",
           req->ip_address ? req->ip_address : "");
  return add_extension(x509, issuer, NID_subject_alt_name, san);
}


/* Fills in and signs x509 for subject, issued by issuer_key. */
static int build_cert(X509 *x509, EVP_PKEY *subject, EVP_PKEY *issuer_key,
                      X509 *issuer, const wxp_cert_request *req)
{
  X509_NAME *name = X509_get_subject_name(x509);

  return X509_set_version(x509, 2) == 1
         && set_serial(x509, req->serial_hex)
         && ASN1_TIME_set(X509_getm_notBefore(x509),
                          (time_t)req->not_before) != NULL
         && ASN1_TIME_set(X509_getm_notAfter(x509),
                          (time_t)req->not_after) != NULL
         && X509_set_pubkey(x509, subject) == 1
         && X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8,
                                       (const unsigned char *)
                                       req->common_name, -1, -1, 0) == 1
         && X509_set_issuer_name(x509, issuer
                                 ? X509_get_subject_name(issuer)
                                 : name) == 1
         && set_extensions(x509, issuer ? issuer : x509, req)
         && X509_sign(x509, issuer_key, EVP_sha256()) > 0;
}


wxp_status wxp_test_cert_issue(const wxp_cert_request *req, wxp_buf *pem,
                               char *errbuf)
{
  EVP_PKEY *subject = read_key(req->subject_key_pem);
  EVP_PKEY *issuer_key = req->issuer_key_pem
                         ? read_key(req->issuer_key_pem) : NULL;
  X509 *issuer = req->issuer_cert_pem ? read_cert(req->issuer_cert_pem)
                                      : NULL;
  X509 *x509 = X509_new();
  BIO *bio = NULL;
  wxp_status rc = WXP_OK;

  if (!subject || (req->issuer_key_pem && !issuer_key)
      || (req->issuer_cert_pem && !issuer) || !x509)
    rc = wxp_fail_ssl(errbuf, WXP_EKEY,
                      "cannot read the keys or issuer certificate");
  if (rc == WXP_OK
      && !build_cert(x509, subject, issuer_key ? issuer_key : subject,
                     issuer, req))
    rc = wxp_fail_ssl(errbuf, WXP_ECRYPTO, "cannot issue the certificate");
  if (rc == WXP_OK) {
    bio = BIO_new(BIO_s_mem());
    if (!bio || PEM_write_bio_X509(bio, x509) != 1)
      rc = wxp_fail_ssl(errbuf, WXP_ECRYPTO,
                        "cannot write the certificate as PEM");
  }
  if (rc == WXP_OK)
    rc = bio_to_buf(bio, pem);

  BIO_free(bio);
  X509_free(x509);
  X509_free(issuer);
  EVP_PKEY_free(issuer_key);
  EVP_PKEY_free(subject);
  return rc;
}
