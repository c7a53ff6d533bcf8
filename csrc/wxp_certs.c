/*
 * wxp_certs.c - the /v3/certificates response: parse, decrypt each
 * certificate with the APIv3 key, and check each serial.
 * SPDX-License-Identifier: MIT
 */
#include "wxp_internal.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <cjson/cJSON.h>

#define APIV3_KEY_SIZE 32

void wxp_cert_list_free(wxp_cert_list *list)
{
  size_t i;

  for (i = 0; i < list->count; i++)
    wxp_cert_free(list->certs[i]);
  free(list->certs);
  list->certs = NULL;
  list->count = 0;
}


/* Returns the string member name of obj, or NULL. */
static const char *get_string(const cJSON *obj, const char *name)
{
  const cJSON *item = cJSON_GetObjectItemCaseSensitive(obj, name);

  return cJSON_IsString(item) ? item->valuestring : NULL;
}


/* Decrypts the encrypt_certificate object of entry number index. */
static wxp_status decrypt_entry(const cJSON *entry, size_t index,
                                const unsigned char *key, wxp_buf *pem,
                                char *errbuf)
{
  const cJSON *enc;
  const char *algorithm;
  const char *nonce;
  const char *aad;
  const char *ciphertext;

  enc = cJSON_GetObjectItemCaseSensitive(entry, "encrypt_certificate");
  algorithm = get_string(enc, "algorithm");
  nonce = get_string(enc, "nonce");
  ciphertext = get_string(enc, "ciphertext");
  /* An absent or null associated_data is the same as an empty one. */
  aad = get_string(enc, "associated_data");
  if (!aad)
    aad = "";

  if (!cJSON_IsObject(enc) || !nonce || !ciphertext)
    return wxp_fail(errbuf, WXP_EJSON,
                    "certificate %zu: encrypt_certificate lacks nonce or "
                    "ciphertext", index + 1);
  if (!algorithm || strcmp(algorithm, "AEAD_AES_256_GCM") != 0)
    return wxp_fail(errbuf, WXP_EJSON,
                    "certificate %zu: algorithm \"%.40s\" is not "
                    "AEAD_AES_256_GCM", index + 1,
                    algorithm ? algorithm : "");

  return wxp_aead_decrypt(key, APIV3_KEY_SIZE, nonce, strlen(nonce), aad,
                          strlen(aad), ciphertext, strlen(ciphertext), pem,
                          errbuf);
}


/* Decrypts and loads entry number index, checking its serial_no. */
static wxp_status load_entry(const cJSON *entry, size_t index,
                             const unsigned char *key, wxp_cert **out,
                             char *errbuf)
{
  const char *serial_no = get_string(entry, "serial_no");
  wxp_buf pem = { 0 };
  wxp_status rc;

  if (!cJSON_IsObject(entry) || !serial_no)
    return wxp_fail(errbuf, WXP_EJSON,
                    "certificate %zu has no serial_no", index + 1);

  /* On failure pem may already hold a buffer, which is freed below. */
  rc = decrypt_entry(entry, index, key, &pem, errbuf);
  if (rc == WXP_EDECRYPT)
    wxp_fail(errbuf, rc,
             "certificate %s could not be decrypted: the AES-GCM tag does "
             "not match, so the APIv3 key is probably wrong", serial_no);
  if (rc == WXP_OK)
    rc = wxp_cert_load(pem.data, pem.len, out, errbuf);
  wxp_buf_free(&pem);
  if (rc != WXP_OK)
    return rc;

  if (strcasecmp(wxp_cert_serial(*out), serial_no) != 0) {
    rc = wxp_fail(errbuf, WXP_EJSON,
                  "certificate listed as %.64s has serial %s", serial_no,
                  wxp_cert_serial(*out));
    wxp_cert_free(*out);
    *out = NULL;
  }
  return rc;
}


wxp_status wxp_certs_parse(const char *body, size_t len,
                           const unsigned char *apiv3_key, size_t key_len,
                           wxp_cert_list *out, char *errbuf)
{
  cJSON *root;
  const cJSON *data;
  const cJSON *entry;
  size_t n;
  wxp_status rc = WXP_OK;

  memset(out, 0, sizeof(*out));
  if (key_len != APIV3_KEY_SIZE)
    return wxp_fail(errbuf, WXP_EINVAL,
                    "APIv3 key is %zu bytes; it must be 32", key_len);

  root = wxp_json_parse(body, len, &n);
  data = cJSON_GetObjectItemCaseSensitive(root, "data");
  if (!root || !cJSON_IsArray(data)) {
    cJSON_Delete(root);
    return wxp_fail(errbuf, WXP_EJSON,
                    "certificates response is not a JSON object with a "
                    "\"data\" array");
  }

  n = (size_t)cJSON_GetArraySize(data);
  out->certs = calloc(n ? n : 1, sizeof(wxp_cert *));
  if (!out->certs)
    rc = WXP_ENOMEM;
  cJSON_ArrayForEach(entry, data) {
    if (rc != WXP_OK)
      break;
    rc = load_entry(entry, out->count, apiv3_key, &out->certs[out->count],
                    errbuf);
    if (rc == WXP_OK)
      out->count++;
  }
  cJSON_Delete(root);

  if (rc != WXP_OK)
    wxp_cert_list_free(out);
  return rc;
}
