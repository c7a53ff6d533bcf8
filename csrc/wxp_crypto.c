/*
 * wxp_crypto.c - SHA256withRSA, RSA-OAEP and AES-GCM.
 * SPDX-License-Identifier: MIT
 */
#include "wxp_internal.h"

#include <string.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/rsa.h>

#define GCM_TAG_SIZE 16

/*
 * The platform sends signatures starting with this prefix, on purpose, in
 * a few responses and callbacks to check that merchants verify them.
 */
static const char probe_prefix[] = "WECHATPAY/SIGNTEST/";

int wxp_is_probe(const char *signature, size_t len)
{
  return len >= sizeof(probe_prefix) - 1
         && memcmp(signature, probe_prefix, sizeof(probe_prefix) - 1) == 0;
}


wxp_status wxp_sign(const wxp_key *key, const char *message, size_t len,
                    wxp_buf *out, char *errbuf)
{
  EVP_MD_CTX *ctx;
  unsigned char sig[1024];
  size_t sig_len = sizeof(sig);
  int ok;

  if (!key->is_private)
    return wxp_fail(errbuf, WXP_EINVAL, "signing needs a private key");
  if ((size_t)EVP_PKEY_get_size(key->pkey) > sizeof(sig))
    return wxp_fail(errbuf, WXP_EINVAL, "key is too large to sign with");

  ctx = EVP_MD_CTX_new();
  if (!ctx)
    return wxp_fail_ssl(errbuf, WXP_ENOMEM, "cannot sign");
  ok = EVP_DigestSignInit(ctx, NULL, EVP_sha256(), NULL, key->pkey) == 1
       && EVP_DigestSign(ctx, sig, &sig_len, (const unsigned char *)message,
                         len) == 1;
  EVP_MD_CTX_free(ctx);
  if (!ok)
    return wxp_fail_ssl(errbuf, WXP_ECRYPTO, "signing failed");

  return wxp_base64_encode(sig, sig_len, out);
}


wxp_status wxp_verify(const wxp_key *key, const char *message, size_t len,
                      const char *signature, size_t sig_len, char *errbuf)
{
  EVP_MD_CTX *ctx;
  wxp_buf raw = { 0 };
  wxp_status rc;
  int ok;

  if (wxp_is_probe(signature, sig_len))
    return wxp_fail(errbuf, WXP_EPROBE,
                    "signature is a WECHATPAY/SIGNTEST/ probe, which never "
                    "verifies");

  rc = wxp_base64_decode(signature, sig_len, &raw, NULL);
  if (rc == WXP_ENOMEM)
    return rc;
  if (rc != WXP_OK)
    return wxp_fail(errbuf, WXP_ESIGNATURE, "signature is not base64");

  ctx = EVP_MD_CTX_new();
  if (!ctx) {
    wxp_buf_free(&raw);
    return wxp_fail_ssl(errbuf, WXP_ENOMEM, "cannot verify");
  }
  ok = EVP_DigestVerifyInit(ctx, NULL, EVP_sha256(), NULL, key->pkey) == 1
       && EVP_DigestVerify(ctx, (const unsigned char *)raw.data, raw.len,
                           (const unsigned char *)message, len) == 1;
  EVP_MD_CTX_free(ctx);
  wxp_buf_free(&raw);

  /* A mismatch queues errors too; they must not leak into later calls. */
  ERR_clear_error();
  if (!ok)
    return wxp_fail(errbuf, WXP_ESIGNATURE, "signature does not match");
  return WXP_OK;
}

/* {====================================================================
 * RSA-OAEP
 * ===================================================================== */

/*
 * Runs one OAEP operation.  The padding (SHA-1 and MGF1-SHA1, empty label)
 * is OpenSSL's default for RSA_PKCS1_OAEP_PADDING, set here explicitly so
 * that a changed default cannot alter it.
 */
static wxp_status oaep_run(const wxp_key *key, int encrypt,
                           const unsigned char *in, size_t in_len,
                           wxp_buf *out, char *errbuf)
{
  EVP_PKEY_CTX *ctx;
  size_t out_len = (size_t)EVP_PKEY_get_size(key->pkey);
  int ok;
  wxp_status rc;

  /* Reserve first: plaintext must never be left behind by a realloc. */
  rc = wxp_buf_reserve(out, out_len);
  if (rc != WXP_OK)
    return rc;

  ctx = EVP_PKEY_CTX_new(key->pkey, NULL);
  if (!ctx)
    return wxp_fail_ssl(errbuf, WXP_ENOMEM, "cannot start RSA-OAEP");
  ok = (encrypt ? EVP_PKEY_encrypt_init(ctx) : EVP_PKEY_decrypt_init(ctx))
       == 1
       && EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_OAEP_PADDING) == 1
       && EVP_PKEY_CTX_set_rsa_oaep_md(ctx, EVP_sha1()) == 1
       && EVP_PKEY_CTX_set_rsa_mgf1_md(ctx, EVP_sha1()) == 1;
  if (ok && encrypt)
    ok = EVP_PKEY_encrypt(ctx, (unsigned char *)out->data + out->len,
                          &out_len, in, in_len) == 1;
  else if (ok)
    ok = EVP_PKEY_decrypt(ctx, (unsigned char *)out->data + out->len,
                          &out_len, in, in_len) == 1;
  EVP_PKEY_CTX_free(ctx);

  if (!ok && encrypt)
    return wxp_fail_ssl(errbuf, WXP_ECRYPTO, "RSA-OAEP encryption failed");
  if (!ok)
    return wxp_fail_ssl(errbuf, WXP_EDECRYPT,
                        "RSA-OAEP decryption failed: wrong key or damaged "
                        "ciphertext");
  out->len += out_len;
  out->data[out->len] = '\0';
  return WXP_OK;
}


wxp_status wxp_oaep_encrypt(const wxp_key *key, const char *plain,
                            size_t len, wxp_buf *out, char *errbuf)
{
  wxp_buf raw = { 0 };
  size_t max = (size_t)EVP_PKEY_get_size(key->pkey) - 42;
  wxp_status rc;

  /* OAEP with SHA-1 carries at most k - 2*20 - 2 bytes (RFC 8017 7.1.1). */
  if (len > max)
    return wxp_fail(errbuf, WXP_EINVAL,
                    "plaintext of %zu bytes is too long for RSA-OAEP with "
                    "this key (at most %zu)", len, max);

  rc = oaep_run(key, 1, (const unsigned char *)plain, len, &raw, errbuf);
  if (rc == WXP_OK)
    rc = wxp_base64_encode(raw.data, raw.len, out);
  wxp_buf_free(&raw);
  return rc;
}


wxp_status wxp_oaep_decrypt(const wxp_key *key, const char *cipher_b64,
                            size_t len, wxp_buf *out, char *errbuf)
{
  wxp_buf raw = { 0 };
  wxp_status rc;

  if (!key->is_private)
    return wxp_fail(errbuf, WXP_EINVAL, "decryption needs a private key");
  rc = wxp_base64_decode(cipher_b64, len, &raw, errbuf);
  if (rc == WXP_EINVAL)
    rc = WXP_EDECRYPT;
  if (rc == WXP_OK && raw.len != (size_t)EVP_PKEY_get_size(key->pkey))
    rc = wxp_fail(errbuf, WXP_EDECRYPT,
                  "RSA-OAEP ciphertext is %zu bytes; this key needs %d",
                  raw.len, EVP_PKEY_get_size(key->pkey));
  if (rc == WXP_OK)
    rc = oaep_run(key, 0, (const unsigned char *)raw.data, raw.len, out,
                  errbuf);
  wxp_buf_free(&raw);
  return rc;
}

/* {====================================================================
 * AES-GCM
 * ===================================================================== */

static const EVP_CIPHER *gcm_cipher(size_t key_len)
{
  switch (key_len) {
  case 16:
    return EVP_aes_128_gcm();
  case 24:
    return EVP_aes_192_gcm();
  case 32:
    return EVP_aes_256_gcm();
  default:
    return NULL;
  }
}


/* Sets up ctx for one AES-GCM operation with a nonce of any length. */
static int gcm_init(EVP_CIPHER_CTX *ctx, int encrypt,
                    const unsigned char *key, size_t key_len,
                    const char *nonce, size_t nonce_len,
                    const char *aad, size_t aad_len)
{
  int n;

  return EVP_CipherInit_ex(ctx, gcm_cipher(key_len), NULL, NULL, NULL,
                           encrypt) == 1
         && EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_IVLEN, (int)nonce_len,
                                NULL) == 1
         && EVP_CipherInit_ex(ctx, NULL, NULL, key,
                              (const unsigned char *)nonce, encrypt) == 1
         && (aad_len == 0
             || EVP_CipherUpdate(ctx, NULL, &n, (const unsigned char *)aad,
                                 (int)aad_len) == 1);
}


static wxp_status gcm_check_args(size_t key_len, size_t nonce_len,
                                 size_t aad_len, size_t len, char *errbuf)
{
  if (!gcm_cipher(key_len))
    return wxp_fail(errbuf, WXP_EINVAL,
                    "AES-GCM key is %zu bytes; expected 16, 24 or 32",
                    key_len);
  if (nonce_len == 0 || nonce_len > 256)
    return wxp_fail(errbuf, WXP_EINVAL,
                    "AES-GCM nonce is %zu bytes; expected 1 to 256",
                    nonce_len);
  if (aad_len > INT32_MAX || len > INT32_MAX - 64)
    return wxp_fail(errbuf, WXP_EINVAL, "AES-GCM input is too large");
  return WXP_OK;
}


wxp_status wxp_aead_encrypt(const unsigned char *key, size_t key_len,
                            const char *nonce, size_t nonce_len,
                            const char *aad, size_t aad_len,
                            const char *plain, size_t len, wxp_buf *out,
                            char *errbuf)
{
  EVP_CIPHER_CTX *ctx;
  wxp_buf raw = { 0 };
  int n = 0;
  int tail = 0;
  int ok;
  wxp_status rc;

  rc = gcm_check_args(key_len, nonce_len, aad_len, len, errbuf);
  if (rc == WXP_OK)
    rc = wxp_buf_reserve(&raw, len + GCM_TAG_SIZE);
  if (rc != WXP_OK)
    return rc;

  ctx = EVP_CIPHER_CTX_new();
  ok = ctx && gcm_init(ctx, 1, key, key_len, nonce, nonce_len, aad, aad_len)
       && EVP_CipherUpdate(ctx, (unsigned char *)raw.data, &n,
                           (const unsigned char *)plain, (int)len) == 1
       && EVP_CipherFinal_ex(ctx, (unsigned char *)raw.data + n, &tail) == 1
       && EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, GCM_TAG_SIZE,
                              raw.data + n + tail) == 1;
  EVP_CIPHER_CTX_free(ctx);
  if (!ok) {
    wxp_buf_free(&raw);
    return wxp_fail_ssl(errbuf, WXP_ECRYPTO, "AES-GCM encryption failed");
  }

  raw.len = (size_t)(n + tail) + GCM_TAG_SIZE;
  rc = wxp_base64_encode(raw.data, raw.len, out);
  wxp_buf_free(&raw);
  return rc;
}


wxp_status wxp_aead_decrypt(const unsigned char *key, size_t key_len,
                            const char *nonce, size_t nonce_len,
                            const char *aad, size_t aad_len,
                            const char *cipher_b64, size_t len, wxp_buf *out,
                            char *errbuf)
{
  EVP_CIPHER_CTX *ctx;
  wxp_buf raw = { 0 };
  size_t body;
  int n = 0;
  int tail = 0;
  int ok;
  wxp_status rc;

  rc = gcm_check_args(key_len, nonce_len, aad_len, len, errbuf);
  if (rc == WXP_OK)
    rc = wxp_base64_decode(cipher_b64, len, &raw, errbuf);
  if (rc == WXP_OK && raw.len < GCM_TAG_SIZE)
    rc = wxp_fail(errbuf, WXP_EDECRYPT,
                  "AES-GCM ciphertext is shorter than its 16-byte tag");
  if (rc == WXP_OK) {
    body = raw.len - GCM_TAG_SIZE;
    rc = wxp_buf_reserve(out, body);
  }
  if (rc != WXP_OK) {
    wxp_buf_free(&raw);
    return rc == WXP_EINVAL ? WXP_EDECRYPT : rc;
  }

  ctx = EVP_CIPHER_CTX_new();
  ok = ctx && gcm_init(ctx, 0, key, key_len, nonce, nonce_len, aad, aad_len)
       && EVP_CipherUpdate(ctx, (unsigned char *)out->data + out->len, &n,
                           (const unsigned char *)raw.data, (int)body) == 1
       && EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, GCM_TAG_SIZE,
                              raw.data + body) == 1
       && EVP_CipherFinal_ex(ctx, (unsigned char *)out->data + out->len + n,
                             &tail) == 1;
  EVP_CIPHER_CTX_free(ctx);
  wxp_buf_free(&raw);
  if (!ok) {
    OPENSSL_cleanse(out->data + out->len, body);
    return wxp_fail_ssl(errbuf, WXP_EDECRYPT,
                        "AES-GCM tag does not match: wrong key, nonce or "
                        "associated data, or damaged ciphertext");
  }

  out->len += (size_t)(n + tail);
  out->data[out->len] = '\0';
  return WXP_OK;
}
