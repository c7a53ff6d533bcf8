/*
 * fuzz_json.c - libFuzzer target for wxp_json_parse and the number-token
 * walker wxp_json_next_number, on the whole input.
 * SPDX-License-Identifier: MIT
 *
 * Invariants, for every text that wxp_json_parse accepts: the walker
 * yields one token per cJSON number node, in the depth-first order in
 * which the Lua decoder visits the nodes.  strtod reads each token as
 * the node's value, so the decoder never pairs a node with another
 * number's digits.  The text contains no NUL byte, because cJSON would
 * cut a string there.  For a rejected text the error offset lies within
 * the text.
 */
#include "fuzz_common.h"

#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

/* Checks the number nodes under item against the walker's tokens. */
static void check_numbers(const cJSON *item, wxp_json_numbers *it,
                          size_t *nodes)
{
  const cJSON *child;
  const char *token;
  size_t len;
  char *copy;

  if (cJSON_IsNumber(item)) {
    (*nodes)++;
    FUZZ_ASSERT(wxp_json_next_number(it, &token, &len));
    FUZZ_ASSERT(len > 0);
    copy = malloc(len + 1);
    if (!copy)
      abort();
    memcpy(copy, token, len);
    copy[len] = '\0';
    FUZZ_ASSERT(strtod(copy, NULL) == item->valuedouble);
    free(copy);
    return;
  }
  cJSON_ArrayForEach(child, item)
    check_numbers(child, it, nodes);
}


int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  const char *text = (const char *)data;
  size_t offset = (size_t)-1;
  wxp_json_numbers it;
  const char *token;
  size_t len;
  size_t nodes = 0;
  cJSON *root;

  root = wxp_json_parse(text, size, &offset);
  if (!root) {
    FUZZ_ASSERT(offset <= size);
    return 0;
  }

  FUZZ_ASSERT(size > 0 && memchr(data, '\0', size) == NULL);
  it.text = text;
  it.len = size;
  it.pos = 0;
  check_numbers(root, &it, &nodes);
  FUZZ_ASSERT(!wxp_json_next_number(&it, &token, &len));
  FUZZ_ASSERT(it.pos == size);
  cJSON_Delete(root);
  return 0;
}
