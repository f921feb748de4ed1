/* The numbers and names of the wire protocol (PROTOCOL.md, Large objects
 * and Backup and restore) that the worker, storage and the agent must agree
 * on, defined once here rather than in each of them: a segment's length,
 * how many blobs one blob.has takes and one 409 names, what a snapshot's
 * manifest may hold, the pages of backup.list, and the item kinds.
 * Included by sc.h; usable alone (it needs nothing), e.g. by storage/. */
#ifndef SC_CONST_H
#define SC_CONST_H

/* Every segment of a blob but the last is exactly this long: what one
 * blob.put carries and one blob.get returns at most. */
#define SC_SEGMENT (256 * 1024)
/* blob.has takes at most this many hashes. */
#define SC_HAS_MAX 1000
/* A 409 of backup.commit names at most this many missing blobs (and says
 * `more` when there are more). */
#define SC_MISSING_MAX 1000
/* A snapshot's manifest blob: at most this many bytes and items. */
#define SC_MANIFEST_MAX_BYTES (64 * 1024 * 1024)
#define SC_MANIFEST_MAX_ITEMS 200000
/* Values a manifest may hold per item: an item map with its five keys is
 * 11, and unknown keys are allowed, so room for 16. */
#define SC_MANIFEST_VALUES_PER_ITEM 16
/* backup.list pages: the default and the most a page holds. */
#define SC_LIST_DEFAULT 100
#define SC_LIST_MAX 1000
/* Longest snapshot label (bytes). */
#define SC_LABEL_MAX 255
/* The kinds of a backup item, as an initialiser for an array of strings
 * (`static const char *const kinds[] = SC_ITEM_KINDS;`), and their count. */
#define SC_ITEM_KINDS                                                          \
  { "contact", "sms", "photo", "video", "file" }
#define SC_ITEM_KINDS_N 5

#endif
