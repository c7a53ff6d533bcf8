/*
 * fuzz_certs_parse.c - libFuzzer target for wxp_certs_parse on a whole
 * /v3/certificates body, decrypted with the fixed test APIv3 key.
 * SPDX-License-Identifier: MIT
 *
 * Mutations almost never keep an AES-GCM tag valid, so this target
 * mostly covers the JSON shape checks and the decryption failures.  The
 * seeds are real responses, which reach the certificate loader too, and
 * fuzz_certs_wrapped.c reaches the code behind the tag with every input.
 *
 * Invariants: the list is empty exactly when the call fails; a failure
 * writes a message; every certificate's serial is non-empty; the wrong
 * key length is rejected before the body is read.
 */
#include "fuzz_common.h"

#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  const char *body = (const char *)data;
  char err[WXP_ERRBUF_SIZE];
  wxp_cert_list list;
  wxp_status rc;
  size_t i;

  err[0] = '\0';
  rc = wxp_certs_parse(body, size, fuzz_apiv3_key, FUZZ_APIV3_KEY_SIZE,
                       &list, err);
  FUZZ_ASSERT(rc < WXP_STATUS_COUNT);
  if (rc == WXP_OK) {
    FUZZ_ASSERT(list.certs != NULL);
    for (i = 0; i < list.count; i++)
      FUZZ_ASSERT(wxp_cert_serial(list.certs[i])[0] != '\0');
  } else {
    FUZZ_ASSERT(list.count == 0);
    FUZZ_ASSERT(list.certs == NULL);
    FUZZ_ASSERT(rc == WXP_ENOMEM || err[0] != '\0');
  }
  wxp_cert_list_free(&list);
  FUZZ_ASSERT(list.count == 0 && list.certs == NULL);

  rc = wxp_certs_parse(body, size, fuzz_apiv3_key, 31, &list, NULL);
  FUZZ_ASSERT(rc == WXP_EINVAL);
  FUZZ_ASSERT(list.count == 0 && list.certs == NULL);
  return 0;
}
