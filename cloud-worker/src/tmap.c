/* A small chained hash map keyed by terminal id, for the pools' queues per
 * terminal and the in-flight bound: both look a terminal up on every task,
 * so the lookup is one hash (XXH3) and a short chain, and the table grows
 * by doubling to keep chains short. Nodes belong to the caller. */
#include "wk_worker.h"

#include "nimbus/errors.h"

#include <stdlib.h>
#include <string.h>

/* Header-only, as in common/src/xxh.c: nothing new to link. */
#define XXH_INLINE_ALL
#include <xxhash.h>

uint64_t wk_tmap_hash(const char *key) { return XXH3_64bits(key, strlen(key)); }

wk_tnode *wk_tmap_find(const wk_tmap *m, const char *key, uint64_t hash) {
  if (m->nb == 0)
    return NULL;
  for (wk_tnode *n = m->b[hash & (m->nb - 1)]; n != NULL; n = n->hnext)
    if (n->hash == hash && strcmp(n->key, key) == 0)
      return n;
  return NULL;
}

static int grow(wk_tmap *m) {
  size_t nb = m->nb > 0 ? m->nb * 2 : 16;
  wk_tnode **b = calloc(nb, sizeof *b);
  if (b == NULL)
    return NIMBUS_ENOMEM;
  for (size_t i = 0; i < m->nb; i++) {
    wk_tnode *n = m->b[i];
    while (n != NULL) {
      wk_tnode *next = n->hnext;
      n->hnext = b[n->hash & (nb - 1)];
      b[n->hash & (nb - 1)] = n;
      n = next;
    }
  }
  free(m->b);
  m->b = b;
  m->nb = nb;
  return 0;
}

int wk_tmap_insert(wk_tmap *m, wk_tnode *n) {
  if (m->n >= m->nb && grow(m) != 0 && m->nb == 0)
    return NIMBUS_ENOMEM; /* a table that cannot grow still takes more */
  size_t i = n->hash & (m->nb - 1);
  n->hnext = m->b[i];
  m->b[i] = n;
  m->n++;
  return 0;
}

void wk_tmap_remove(wk_tmap *m, wk_tnode *n) {
  wk_tnode **pp = &m->b[n->hash & (m->nb - 1)];
  while (*pp != NULL && *pp != n)
    pp = &(*pp)->hnext;
  if (*pp == n) {
    *pp = n->hnext;
    m->n--;
  }
}

void wk_tmap_fini(wk_tmap *m) {
  free(m->b);
  m->b = NULL;
  m->nb = m->n = 0;
}
