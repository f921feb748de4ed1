/* nimbusctl's commands for code the cloud hands out: keygen and module
 * (ctl_code.c), agent (ctl_agent.c), and what they share: the storage
 * options, the way into Redis, and the way a file becomes a blob. */
#ifndef CTL_CODE_H
#define CTL_CODE_H

#include "st.h"
#include "st_blob.h"

#include <stdbool.h>
#include <stdint.h>

#define CTL_EXIT_FAILED 1
#define CTL_EXIT_USAGE 2

/* The options of the code commands beyond the storage ones; each command
 * names those it takes (ctl_opts_only). */
enum {
  CTL_O_KEY = 1u << 0,
  CTL_O_VERSION = 1u << 1,
  CTL_O_NAME = 1u << 2,
  CTL_O_PLATFORM = 1u << 3,
  CTL_O_NOTES = 1u << 4,
  CTL_O_TEXT = 1u << 5,
  CTL_O_ALL = 1u << 6,
};

/* Every pointer borrows from argv or the environment. */
typedef struct ctl_opts {
  const char *data_dir, *redis_host, *redis_password;
  int redis_port;
  const char *key, *version, *name, *platform, *notes, *text;
  bool all;
  unsigned given;       /* the CTL_O_* given on the command line */
  const char *accounts; /* nimbusctl's --accounts, or NULL */
} ctl_opts;

/* True when `object` (nimbusctl's first word) is one of these commands'. */
bool ctl_code_handles(const char *object);

/* Runs `nimbusctl OBJECT ...` with argv[0] the object; `accounts` is
 * nimbusctl's --accounts (borrowed; NULL when not given). Returns the
 * exit status: 0, 1 refused or failed, 2 usage. */
int ctl_code_main(int argc, char **argv, const char *accounts);

/* Prints "nimbusctl: what: detail" (detail may be NULL) to stderr. */
void ctl_say(const char *what, const char *detail);

/* CTL_EXIT_USAGE, said, when o gives an option outside `allowed`. */
int ctl_opts_only(const ctl_opts *o, unsigned allowed, const char *command);

/* Connects to o's Redis into *r (the caller frees it): 0, or
 * CTL_EXIT_FAILED, said. */
int ctl_redis(const ctl_opts *o, st_redis **r);

/* A file stored in the blob store: its name and size, and the segment
 * sums its record needs (borrowed from w). */
typedef struct ctl_stored {
  char hex[65];
  uint64_t size;
  const uint8_t (*sums)[ST_SEGSUM];
  uint64_t nsegs;
  st_blobstore *store; /* owned: ctl_stored_fini */
  st_blob_writer *w;   /* owned */
} ctl_stored;

/* Writes `file` (borrowed path) into o->data_dir's blob store through an
 * st_blob_writer staged as nimbusctl's upload `<tag>.<pid>`, marked in r
 * as being committed (for a minute: record it before then) and moved into
 * the store. Returns 0 with *out filled (ctl_stored_fini afterwards, also
 * on failure), or CTL_EXIT_FAILED, said. */
int ctl_store_file(const ctl_opts *o, st_redis *r, const char *file,
                   const char *tag, ctl_stored *out);
void ctl_stored_fini(ctl_stored *s);

/* The agent commands (ctl_agent.c): `pos` (n words, borrowed) are the
 * words after "agent". Returns the exit status. */
int ctl_agent_main(const ctl_opts *o, char **pos, int n);
/* Their usage lines, for nimbusctl's help. */
extern const char ctl_agent_usage[];

#endif
