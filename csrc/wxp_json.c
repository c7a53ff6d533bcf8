/*
 * wxp_json.c - number tokens of a JSON text, in document order.
 * SPDX-License-Identifier: MIT
 *
 * cJSON stores every number as a double, which loses integers above 2^53.
 * A decoder walks the cJSON tree depth first and, for each number node,
 * takes the next token from here: both follow document order, because
 * cJSON keeps object members and array elements in the order it read them.
 * The text must already have been accepted by cJSON.
 */
#include "wxp.h"

#include <string.h>

#include <cjson/cJSON.h>

/*
 * Returns the offset of the first \u0000 escape inside a string, or len.
 * cJSON keeps strings NUL-terminated, so such a string would be cut short
 * without a word; the parse fails instead.
 */
static size_t find_escaped_nul(const char *s, size_t len)
{
  size_t i = 0;
  int in_string = 0;

  for (i = 0; i < len; i++) {
    if (s[i] == '"') {
      in_string = !in_string;
    } else if (in_string && s[i] == '\\') {
      if (i + 5 < len && memcmp(s + i + 1, "u0000", 5) == 0)
        return i;
      i++;
    }
  }
  return len;
}


cJSON *wxp_json_parse(const char *text, size_t len, size_t *error_offset)
{
  const char *end = NULL;
  const char *nul = memchr(text, '\0', len);
  cJSON *root;
  size_t at;

  /*
   * Valid JSON contains no NUL byte.  cJSON takes one for whitespace
   * between tokens and keeps one inside a string, which its
   * NUL-terminated copy then cuts short without a word.
   */
  if (nul) {
    *error_offset = (size_t)(nul - text);
    return NULL;
  }

  root = cJSON_ParseWithLengthOpts(text, len, &end, 0);
  if (!root) {
    *error_offset = end && end >= text ? (size_t)(end - text) : 0;
    return NULL;
  }

  /* cJSON stops after the value; anything but whitespace after it fails. */
  at = (size_t)(end - text);
  while (at < len && (text[at] == ' ' || text[at] == '\t'
                      || text[at] == '\n' || text[at] == '\r'))
    at++;
  if (at == len)
    at = find_escaped_nul(text, len);
  if (at != len) {
    cJSON_Delete(root);
    *error_offset = at;
    return NULL;
  }
  return root;
}


static int is_number_char(char c)
{
  return (c >= '0' && c <= '9') || c == '-' || c == '+' || c == '.'
         || c == 'e' || c == 'E';
}


int wxp_json_next_number(wxp_json_numbers *it, const char **token,
                         size_t *token_len)
{
  const char *s = it->text;
  size_t i = it->pos;
  size_t start;

  while (i < it->len) {
    if (s[i] == '"') {
      /* Skip the string, honouring backslash escapes. */
      for (i++; i < it->len && s[i] != '"'; i++) {
        if (s[i] == '\\')
          i++;
      }
      i++;
      continue;
    }
    if (s[i] == '-' || (s[i] >= '0' && s[i] <= '9')) {
      start = i;
      while (i < it->len && is_number_char(s[i]))
        i++;
      *token = s + start;
      *token_len = i - start;
      it->pos = i;
      return 1;
    }
    i++;
  }

  it->pos = it->len;
  return 0;
}
