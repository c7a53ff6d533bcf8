/*
 * fuzz_certs_wrapped.c - libFuzzer target for the certificate path of
 * wxp_certs_parse behind the AES-GCM tag.
 * SPDX-License-Identifier: MIT
 *
 * The input is three lines and the rest: serial_no, nonce,
 * associated_data, then the certificate text.  The target encrypts the
 * text with wxp_aead_encrypt under the test APIv3 key, wraps it in a
 * /v3/certificates body as the platform sends it, and parses that, so
 * every input passes the tag and reaches the PEM and X.509 code.
 *
 * Invariant: the response parses exactly when wxp_cert_load accepts the
 * text and the certificate's serial equals serial_no (ignoring case),
 * and then it yields that certificate.  Otherwise the status is the
 * loader's, or WXP_EJSON for a serial mismatch or a missing field.
 */
#include "fuzz_common.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <cjson/cJSON.h>

enum { SERIAL_NO, NONCE, AAD, CERT_TEXT, FIELD_COUNT };

/* Adds name as a string member unless the field is absent. */
static void add_string(cJSON *obj, const char *name, const fuzz_field *f)
{
  if (f->present && !cJSON_AddStringToObject(obj, name, f->text))
    abort();
}


/* Builds the response body; ciphertext may be "" when encryption failed. */
static char *wrap(const fuzz_field *fields, const char *ciphertext)
{
  cJSON *root = cJSON_CreateObject();
  cJSON *data = cJSON_AddArrayToObject(root, "data");
  cJSON *entry = cJSON_CreateObject();
  cJSON *enc;
  char *body;

  if (!root || !data || !entry || !cJSON_AddItemToArray(data, entry))
    abort();
  add_string(entry, "serial_no", &fields[SERIAL_NO]);
  if (!cJSON_AddStringToObject(entry, "effective_time",
                               "2023-11-14T22:13:20+08:00")
      || !cJSON_AddStringToObject(entry, "expire_time",
                                  "2028-11-12T22:13:20+08:00"))
    abort();
  enc = cJSON_AddObjectToObject(entry, "encrypt_certificate");
  if (!enc
      || !cJSON_AddStringToObject(enc, "algorithm", "AEAD_AES_256_GCM")
      || !cJSON_AddStringToObject(enc, "ciphertext", ciphertext))
    abort();
  add_string(enc, "nonce", &fields[NONCE]);
  add_string(enc, "associated_data", &fields[AAD]);

  body = cJSON_PrintUnformatted(root);
  cJSON_Delete(root);
  if (!body)
    abort();
  return body;
}


/* Checks the parse result against wxp_cert_load on the plain text. */
static void check_result(const fuzz_field *fields, wxp_status rc,
                         const wxp_cert_list *list)
{
  const fuzz_field *text = &fields[CERT_TEXT];
  wxp_cert *expected = NULL;
  wxp_status load_rc;
  int serial_matches;

  load_rc = wxp_cert_load(text->text, text->len, &expected, NULL);
  serial_matches = load_rc == WXP_OK
                   && strcasecmp(wxp_cert_serial(expected),
                                 fields[SERIAL_NO].text) == 0;
  if (load_rc == WXP_OK && serial_matches) {
    FUZZ_ASSERT(rc == WXP_OK);
    FUZZ_ASSERT(list->count == 1);
    FUZZ_ASSERT(strcmp(wxp_cert_serial(list->certs[0]),
                       wxp_cert_serial(expected)) == 0);
    FUZZ_ASSERT(wxp_key_same_public(wxp_cert_key(list->certs[0]),
                                    wxp_cert_key(expected)));
  } else if (load_rc == WXP_OK) {
    FUZZ_ASSERT(rc == WXP_EJSON);
  } else {
    FUZZ_ASSERT(rc == load_rc);
  }
  wxp_cert_free(expected);
}


int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  fuzz_field fields[FIELD_COUNT];
  wxp_buf ciphertext = { 0 };
  wxp_cert_list list;
  wxp_status encrypt_rc;
  wxp_status rc;
  char err[WXP_ERRBUF_SIZE];
  char *body;

  fuzz_split(data, size, fields, FIELD_COUNT);

  /* The JSON members are C strings: they end at the first NUL. */
  fields[SERIAL_NO].len = strlen(fields[SERIAL_NO].text);
  fields[NONCE].len = strlen(fields[NONCE].text);
  fields[AAD].len = strlen(fields[AAD].text);

  encrypt_rc = wxp_aead_encrypt(fuzz_apiv3_key, FUZZ_APIV3_KEY_SIZE,
                                fields[NONCE].text, fields[NONCE].len,
                                fields[AAD].text, fields[AAD].len,
                                fields[CERT_TEXT].text,
                                fields[CERT_TEXT].len, &ciphertext, NULL);
  body = wrap(fields, encrypt_rc == WXP_OK ? ciphertext.data : "");

  err[0] = '\0';
  rc = wxp_certs_parse(body, strlen(body), fuzz_apiv3_key,
                       FUZZ_APIV3_KEY_SIZE, &list, err);
  FUZZ_ASSERT(rc == WXP_OK || err[0] != '\0');
  if (!fields[SERIAL_NO].present || !fields[NONCE].present)
    FUZZ_ASSERT(rc == WXP_EJSON);
  else if (encrypt_rc != WXP_OK)
    FUZZ_ASSERT(rc != WXP_OK);
  else
    check_result(fields, rc, &list);

  wxp_cert_list_free(&list);
  cJSON_free(body);
  wxp_buf_free(&ciphertext);
  fuzz_fields_free(fields, FIELD_COUNT);
  return 0;
}
