/* Semantic versions (SemVer 2.0.0, semver.org), the one order of agent
 * packages: the cloud answers agent.get with the newest version by it and
 * does not offer a terminal what it already runs, and the agent refuses a
 * version at or below its own by the same rules, so both live here in
 * common/ rather than in storage (which the agent does not link).
 *
 * Accepted, and nothing else: MAJOR.MINOR.PATCH, three numbers of ASCII
 * digits without leading zeros ("0" itself is fine), then optionally
 * "-PRERELEASE" and then optionally "+BUILD", each a dot-separated list
 * of non-empty identifiers of [0-9A-Za-z-], a numeric pre-release
 * identifier again without leading zeros; at most NB_SEMVER_MAX bytes in
 * all. No "v" in front, no spaces, no "1.2" short forms. Numbers may be
 * of any length (they are compared as digit strings, so nothing
 * overflows). Pure functions: thread-safe, no allocation. */
#ifndef NB_SEMVER_H
#define NB_SEMVER_H

#include <stdbool.h>
#include <stddef.h>

#define NB_SEMVER_MAX 64

/* True when the n bytes at s (borrowed, need not be NUL-terminated) are
 * a version as above. */
bool nb_semver_valid(const char *s, size_t n);

/* The precedence of a and b (NUL-terminated, borrowed), SemVer 2.0.0
 * section 11: numbers compare numerically (1.10.0 after 1.9.3); a
 * pre-release comes before its release (1.0.0-rc.1 before 1.0.0); two
 * pre-releases compare identifier by identifier, numeric ones as numbers
 * and before alphanumeric ones, alphanumeric ones bytewise in ASCII, and
 * a shorter list that is a prefix of the longer one first (1.0.0-alpha
 * before 1.0.0-alpha.1 before 1.0.0-alpha.beta before 1.0.0-beta before
 * 1.0.0-beta.2 before 1.0.0-beta.11 before 1.0.0-rc.1). Build metadata
 * is ignored: 1.0.0+a and 1.0.0+b are equal. Returns <0, 0 or >0. An
 * invalid version sorts before every valid one, and invalid ones among
 * themselves bytewise, so a sort by this order is total whatever it is
 * given. */
int nb_semver_cmp(const char *a, const char *b);

/* The length of the part of the valid version s (n bytes) that decides
 * its precedence, i.e. without "+BUILD": two valid versions are equal by
 * nb_semver_cmp exactly when these parts are the same bytes (numbers have
 * no leading zeros). Returns n for a version without build metadata. */
size_t nb_semver_core_len(const char *s, size_t n);

#endif
