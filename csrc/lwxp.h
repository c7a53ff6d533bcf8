/*
 * lwxp.h - shared parts of the Lua binding (lwxp.c, lwxp_json.c).
 * SPDX-License-Identifier: MIT
 */
#ifndef LWXP_H
#define LWXP_H

#include "wxp.h"

#include <lua.h>
#include <lauxlib.h>

/*
 * Lua 5.1 API: LuaJIT 2.1 (OpenResty's branch) already has luaL_setfuncs
 * and luaL_newlib, plain Lua 5.1 does not.
 */
#if LUA_VERSION_NUM < 502
#define lua_rawlen(L, i) lua_objlen(L, i)
#ifndef luaL_newlib
#define luaL_setfuncs(L, l, n) luaL_register(L, NULL, l)
#define luaL_newlib(L, l) (lua_newtable(L), luaL_register(L, NULL, l))
#endif
#endif

/*
 * A box is a userdata that owns C memory while Lua code that may raise
 * runs, so that an error cannot leak it: its __gc frees (and, for a
 * secret, wipes) what it holds.
 */
typedef enum lwxp_box_kind {
  LWXP_BOX_EMPTY = 0,
  LWXP_BOX_BUF,          /* a wxp_buf, freed */
  LWXP_BOX_SECRET,       /* a wxp_buf, wiped then freed */
  LWXP_BOX_POINTER       /* a pointer with its own free function */
} lwxp_box_kind;

typedef struct lwxp_box {
  lwxp_box_kind kind;
  wxp_buf buf;
  void *ptr;
  void (*free_ptr)(void *);
} lwxp_box;

/* Pushes a new empty box of this kind and returns it. */
lwxp_box *lwxp_newbox(lua_State *L, lwxp_box_kind kind);

/* Frees what the box holds now rather than at collection. */
void lwxp_box_release(lwxp_box *box);

/* The JSON codec, registered into the module table at the top. */
void lwxp_open_json(lua_State *L);

/* Pushes the value of a sentinel: JSON null and the empty array. */
void lwxp_push_null(lua_State *L);
void lwxp_push_empty_array(lua_State *L);

#endif
