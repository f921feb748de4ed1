/* Publishes written on the publishing thread (nb_paho.h, nb_paho_send).
 *
 * MQTTAsync_sendMessage only queues a command and wakes Paho's send
 * thread, which takes Paho's global mutex and writes the packet. At 64
 * tasks in flight that hand-over is a wake-up of a sleeping thread per
 * message, and, when the publisher is Paho's receive thread inside
 * messageArrived (the worker answering a ping), the send thread wakes
 * only to block on the mutex the receive thread holds, and is woken once
 * more when it is released. On this project's 2-core virtual machines a
 * context switch costs more than the rest of the message's work.
 *
 * nb_paho_send does what the send thread would do, on the caller's
 * thread: it holds back the wake-up that MQTTAsync_sendMessage gives
 * (Paho's pthread_cond_signal calls are renamed to nb_paho_cond_signal in
 * the build's copy of the archive), then runs Paho's own
 * MQTTAsync_processCommand (made global by the same copy) until no
 * command is ready. That function takes Paho's mutexes itself and is the
 * one the send thread runs, so packets still leave in queue order, and
 * whatever Paho does on a failed write (failure callbacks, closing the
 * socket) is unchanged. A command that cannot go yet (no connection,
 * Paho's in-flight window full) is left to the send thread, which is
 * then woken as before.
 *
 * On Paho's receive thread (a publish from inside a callback, where Paho
 * holds its global mutex) the commands are run right after that thread
 * releases the mutex: Paho's pthread_mutex_unlock calls are renamed to
 * nb_paho_mutex_unlock, which looks for that one case.
 *
 * The archive's symbols used here are in paho_internal.h. */
#include "nb_paho.h"
#include "paho_internal.h"

#include <pthread.h>
#include <stdbool.h>

/* Set while this thread is inside MQTTAsync_sendMessage for nb_paho_send. */
static _Thread_local bool tl_hold;
/* A wake-up of the send thread was held back. */
static _Thread_local bool tl_held;
/* This thread is running Paho's commands (a callback publishing from
 * there must not start a second, nested run). */
static _Thread_local bool tl_running;
/* Paho's receive thread: run the commands once it releases the mutex. */
static _Thread_local bool tl_run_at_unlock;

int nb_paho_cond_signal(pthread_cond_t *cond) {
  if (tl_hold) {
    tl_held = true;
    return 0;
  }
  return pthread_cond_signal(cond);
}

/* Runs every ready command; wakes the send thread when none was. */
static void run_commands(void) {
  tl_running = true;
  int n = 0;
  while (MQTTAsync_processCommand() != 0)
    n++;
  tl_running = false;
  if (n == 0)
    (void)Thread_signal_cond(send_cond);
}

int nb_paho_mutex_unlock(pthread_mutex_t *m) {
  int rc = pthread_mutex_unlock(m);
  if (tl_run_at_unlock && m == mqttasync_mutex) {
    tl_run_at_unlock = false;
    run_commands();
  }
  return rc;
}

int nb_paho_send(MQTTAsync client, const char *topic, MQTTAsync_message *msg,
                 MQTTAsync_responseOptions *opts) {
  tl_hold = true;
  tl_held = false;
  int rc = MQTTAsync_sendMessage(client, topic, msg, opts);
  tl_hold = false;
  if (!tl_held)
    return rc;
  tl_held = false;
  pthread_t self = pthread_self();
  if (tl_running)
    return rc; /* the run under way takes it */
  if (pthread_equal(self, receiveThread_id))
    tl_run_at_unlock = true;
  else if (pthread_equal(self, sendThread_id))
    (void)Thread_signal_cond(send_cond);
  else
    run_commands();
  return rc;
}
