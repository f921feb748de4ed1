/* Paho MQTT C set up the way Nimbus runs it.
 *
 * Every program and library that links nimbus_paho gets these functions.
 * There are two builds of them (cmake/NimbusPaho.cmake,
 * NIMBUS_PAHO_PATCHED): the patched one (a copy of Paho's static archive
 * with some of its internal calls redirected to common/src/paho_read.c,
 * paho_send.c, paho_lean.c and nodelay.c) and the one on Paho's public
 * API only (common/src/paho_public.c). Both give every function marked
 * "both builds" below, with the same contract; what differs is said at
 * each. The functions marked "patched build" exist only there. */
#ifndef NB_PAHO_H
#define NB_PAHO_H

#include <MQTTAsync.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>
#include <sys/uio.h>

/* Turns off Paho's in-memory trace ring before the first client is made:
 * by default the library formats every protocol event into a 400-entry
 * ring under one process-wide mutex, whether or not anyone reads it. Only
 * errors are kept then. When MQTT_C_CLIENT_TRACE is set in the
 * environment (Paho's own switch for a trace on stdout or a file) nothing
 * is changed, so Paho's tracing still works for debugging.
 *
 * Call before MQTTAsync_create*; any thread, any number of times (the
 * work is done once per process). Cannot fail. Both builds. */
void nb_paho_init(void);

/* "patched" or "public": which build this is (static storage). */
const char *nb_paho_build(void);

/* Call once a connection to the broker at `uri` is up (Paho's
 * onConnected callback: the first connect and every reconnect). Paho never
 * sets TCP_NODELAY, and without it each QoS 1 exchange waits for a
 * delayed ACK. The patched build sets it before connect (nodelay.c's
 * __wrap_connect) and does nothing here; the public-API build sets it
 * here, on each TCP socket of the process connected to the broker's port
 * (and its address, when `uri` names the host by number; a name is not
 * looked up) that does not have it yet. Returns how many sockets it set
 * (0 in the patched build). Any thread; never fails (a socket it cannot
 * set is left as it is). Both builds. */
int nb_paho_connected(const char *uri);

/* Call right before MQTTAsync_connect, and when a connection is lost (Paho
 * then reconnects by itself). Paho's receive thread, when it has
 * no socket to wait on, sleeps 100 ms at a time; it starts (or is idle)
 * before the send thread has made the new connection's socket, so the
 * CONNACK used to be read up to 100 ms late, on every connect. For the
 * next 2 s that sleep is 1 ms instead, so the socket is polled as soon as
 * it exists; after that (no connection: a broker away for long) the
 * receive thread sleeps 100 ms again, as Paho means it to, not waking a
 * phone a thousand times a second. Any thread; cannot fail. Both builds
 * (the public-API build does nothing: the nap is Paho's). */
void nb_paho_connecting(void);

/* Paho's own recv, poll and close calls land in these three
 * (common/src/paho_read.c; the build renames them in its copy of Paho's
 * archive). They read each socket ahead, so that a packet costs one recv
 * instead of one per header byte plus one for the body. Declared here for
 * the unit tests; nothing else calls them. Patched build.
 *
 * nb_paho_recv: recv(2) for a socket Paho owns, same contract: returns the
 * bytes stored in `buf` (1..n), 0 at end of file, -1 with errno (EAGAIN on
 * a non-blocking socket with nothing to read). flags other than 0 and
 * n == 0 pass straight to recv. Bytes the kernel gave beyond `n` stay in
 * the socket's read-ahead (up to 16 KiB, allocated on first use) for the
 * next call. */
ssize_t nb_paho_recv(int fd, void *buf, size_t n, int flags);

/* poll(2), except that a socket polled for POLLIN whose read-ahead holds
 * bytes is reported readable at once. Returns the number of entries with
 * revents set, or -1 with errno from poll. */
int nb_paho_poll(struct pollfd *fds, nfds_t nfds, int timeout);

/* writev(2), same contract, with one exception; notes whether everything
 * was written, so that Paho's next check for writability (a poll for
 * POLLOUT alone, before every packet it reads) is answered without a
 * system call while the socket's writes go out whole.
 *
 * The exception: a write to a socket that fails for any reason but a full
 * send buffer (EPIPE, ECONNRESET, ETIMEDOUT, ...; EBADF and ENOTSOCK pass
 * through) shuts the socket down both ways and returns -1 with errno
 * EAGAIN (EINTR, which a non-blocking socket does not give, is EAGAIN
 * too, without the shutdown). Paho 1.3.12 (and its master as of 2025:
 * upstream issues #1621, #1622) handles a QoS 1 or 2 publish whose write
 * fails by calling the publish's onFailure and freeing its topic and
 * payload, which the in-flight copy it has just stored for a re-send
 * still points to; that copy frees them again when it goes (on a clean session
 * at once, else at the next connect: emptied when the broker kept no session,
 * re-sent and freed at the PUBACK when it did), which corrupts the heap. A
 * write that would block instead leaves the packet as one of Paho's pending
 * writes and the publish in flight, as on any connection that breaks while a
 * message waits for its PUBACK; the shutdown makes the receive thread's
 * next poll see a hang-up and its next read end of file, so it closes the
 * connection (dropping the pending write), reports it lost, and Paho's
 * reconnect and session handling take over. Patched build. */
ssize_t nb_paho_writev(int fd, const struct iovec *iov, int iovcnt);

/* Drops the socket's read-ahead (any unread bytes with it), then
 * close(2)s it; returns close's result. */
int nb_paho_close(int fd);

/* Pauses (true) or resumes (false) Paho's reads in this process; returns
 * whether this build can (true in the patched build; the public-API build
 * cannot stop Paho's reads and returns false, doing nothing). While
 * paused, nb_paho_poll does not report any socket readable, so Paho's
 * receive thread reads and delivers nothing (bytes stay in the kernel and
 * the read-ahead, and TCP pushes back on the sender); POLLOUT, errors and
 * hang-ups still show. Resuming ends a poll that is waiting. Meant for a
 * process with one client whose application has no room for more
 * messages: it never has to hold Paho's thread inside messageArrived,
 * where Paho's global mutex is held. A pause longer than the keep-alive
 * interval costs the connection (the PINGRESP is not read), and Paho
 * reconnects. Any thread; idempotent; cannot fail (without an eventfd, a
 * paused poll looks again every 10 ms). A message already read when the
 * pause begins is still delivered: the application's messageArrived
 * returns 0 for it when it has no room (Paho keeps it and offers it again
 * after its next read from the socket), which is the backpressure of the
 * public-API build. Both builds. */
bool nb_paho_pause_reads(bool pause);

/* MQTTAsync_sendMessage, with the packet written on the calling thread
 * (common/src/paho_send.c) instead of by a wake-up of Paho's send thread.
 * Same arguments, same result codes, same ownership (Paho copies the
 * topic and the payload before it returns) and the same order on the
 * wire as MQTTAsync_sendMessage; the response options' callbacks may run
 * on the calling thread, before this returns (a failed write's
 * onFailure5, say), so a caller must not hold a lock those callbacks
 * take. From inside one of Paho's callbacks the packet goes out as soon
 * as the callback has returned. A publish that cannot go yet (offline, or
 * Paho's in-flight window full) is left to Paho's send thread as usual.
 * Any thread. Both builds (the public-API build is MQTTAsync_sendMessage
 * itself, with Paho's send thread writing the packet). */
int nb_paho_send(MQTTAsync client, const char *topic, MQTTAsync_message *msg,
                 MQTTAsync_responseOptions *opts);

/* Paho's own pthread_cond_signal and pthread_mutex_unlock calls land in
 * these two (the build renames them in its copy of the archive);
 * nothing else calls them. Same contracts as the pthread calls. Patched
 * build. */
int nb_paho_cond_signal(pthread_cond_t *cond);
int nb_paho_mutex_unlock(pthread_mutex_t *m);

/* ---- Reading the broker's answers (paho_session.c; both builds) ------- */

/* The worst reason code of a SUBACK for a SUBSCRIBE of `filters` filters
 * (0x80 or more is a refusal); 0 for a NULL `d`. */
int nb_paho_suback_worst(const MQTTAsync_successData5 *d, size_t filters);
/* The SUBACK's reason codes, one per filter in order, into codes (at most
 * cap); returns how many. */
size_t nb_paho_suback_codes(const MQTTAsync_successData5 *d, size_t filters,
                            int *codes, size_t cap);
/* The CONNACK reason code of a failed CONNECT the broker refused, or 0
 * when it did not answer (no broker there, the link dropped). */
int nb_paho_connack_reason(const MQTTAsync_failureData5 *d);
/* Why a CONNECT (or another request) failed, as a phrase for a person:
 * the broker's reason with its code, else Paho's message, else Paho's
 * error text; into buf (cap bytes). `d` may be NULL. */
void nb_paho_failure_text(const MQTTAsync_failureData5 *d, char *buf,
                          size_t cap);

#endif
