/* A small pool of OS threads for the engine's batch sampling (sampling/_chain.pyx
 * sample_rows): pool_run(fn, arg, n) calls fn(arg, part, n) for part 0..n-1, part 0 on the
 * calling thread and the others on workers, and returns when all are done. No Python
 * object is touched: the caller has released the GIL.
 *
 * pool_start(fn, arg, n) runs every part on a worker and returns at once, so the caller
 * goes on meanwhile (start_rows: the engine handles each drawn token while the later rows
 * are drawn, and draws rows itself when it would wait); pool_finish() waits for the parts.
 * The pool is the caller's from start to finish. A latch tells a waiting caller that one
 * result is in (latch_set / latch_wait on a slot that holds -1 until then).
 *
 * Workers start on first use, at most POOL_MAX, and sleep on a condition variable between
 * jobs (no spinning: on a machine whose cores decode, a spinning helper would slow the
 * decode). One job at a time: concurrent callers queue on run_lock. After fork() the child
 * has no workers (pthread_atfork resets the pool). Without POSIX threads every part runs
 * on the caller.
 */
#ifndef SAMPLING_POOL_H
#define SAMPLING_POOL_H

/* the next index of a shared counter: work items handed out one at a time to whichever
 * thread asks (workers and the caller alike) */
static inline long pool_claim(long *counter) {
    return __atomic_fetch_add(counter, 1, __ATOMIC_ACQ_REL);
}

#define POOL_MAX 16          /* parts, the caller's included */

typedef void (*pool_fn)(void *arg, int part, int n_parts);

#if defined(__unix__) || defined(__APPLE__)
#include <pthread.h>
#include <stdint.h>

static struct {
    pthread_mutex_t run_lock;       /* one job at a time */
    pthread_mutex_t mu;
    pthread_cond_t go, done;
    int n_workers;
    unsigned long gen;              /* job number: a worker runs each one once */
    int pending;                    /* worker parts of the current job not yet done */
    pool_fn fn;
    void *arg;
    int n_parts;
    int first;                      /* the part worker 1 runs: 1 (pool_run), 0 (pool_start) */
    int atfork;
    unsigned long start_gen[POOL_MAX];  /* the job number when worker i was started: it runs
                                           every later job, whenever it first gets the lock */
} pool_ = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER,
           PTHREAD_COND_INITIALIZER, 0, 0, 0, 0, 0, 0, 1, 0, {0}};

static void *pool_main(void *p) {
    int id = (int)(intptr_t)p;      /* 1 .. POOL_MAX */
    unsigned long seen;
    pthread_mutex_lock(&pool_.mu);
    seen = pool_.start_gen[id];
    for (;;) {
        while (pool_.gen == seen)
            pthread_cond_wait(&pool_.go, &pool_.mu);
        seen = pool_.gen;
        if (id - 1 + pool_.first < pool_.n_parts) {
            pool_fn fn = pool_.fn;
            void *arg = pool_.arg;
            int n = pool_.n_parts, part = id - 1 + pool_.first;
            pthread_mutex_unlock(&pool_.mu);
            fn(arg, part, n);
            pthread_mutex_lock(&pool_.mu);
            if (--pool_.pending == 0)
                pthread_cond_signal(&pool_.done);
        }
    }
    return NULL;
}

static void pool_after_fork(void) {
    pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;
    pthread_cond_t c = PTHREAD_COND_INITIALIZER;
    pool_.run_lock = m;
    pool_.mu = m;
    pool_.go = c;
    pool_.done = c;
    pool_.n_workers = 0;
    pool_.pending = 0;
}

/* workers for parts 1..n_parts-1, started as needed; the number of parts that can run */
static int pool_grow(int n_parts) {
    pthread_attr_t attr;
    pthread_t t;
    if (n_parts > POOL_MAX)
        n_parts = POOL_MAX;
    if (!pool_.atfork) {
        pthread_atfork(NULL, NULL, pool_after_fork);
        pool_.atfork = 1;
    }
    if (pool_.n_workers >= n_parts - 1)
        return n_parts;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, 1 << 20);   /* the kernels keep ~100 KB on the stack */
    while (pool_.n_workers < n_parts - 1) {
        pool_.start_gen[pool_.n_workers + 1] = pool_.gen;
        if (pthread_create(&t, &attr, pool_main, (void *)(intptr_t)(pool_.n_workers + 1)) != 0)
            break;
        pool_.n_workers++;
    }
    pthread_attr_destroy(&attr);
    return pool_.n_workers + 1 < n_parts ? pool_.n_workers + 1 : n_parts;
}

/* run fn over n_parts parts; returns how many ran (parts past the workers it could start
 * are not run: the caller asks for that many and splits its work by the answer) */
static int pool_parts(int n_parts) {
    int n;
    if (n_parts <= 1)
        return 1;
    pthread_mutex_lock(&pool_.mu);
    n = pool_grow(n_parts);
    pthread_mutex_unlock(&pool_.mu);
    return n;
}

static void pool_run(pool_fn fn, void *arg, int n_parts) {
    if (n_parts <= 1) {
        fn(arg, 0, 1);
        return;
    }
    pthread_mutex_lock(&pool_.run_lock);
    pthread_mutex_lock(&pool_.mu);
    pool_.fn = fn;
    pool_.arg = arg;
    pool_.n_parts = n_parts;
    pool_.first = 1;
    pool_.pending = n_parts - 1;
    pool_.gen++;
    pthread_cond_broadcast(&pool_.go);
    pthread_mutex_unlock(&pool_.mu);
    fn(arg, 0, n_parts);
    pthread_mutex_lock(&pool_.mu);
    while (pool_.pending > 0)
        pthread_cond_wait(&pool_.done, &pool_.mu);
    pthread_mutex_unlock(&pool_.mu);
    pthread_mutex_unlock(&pool_.run_lock);
}

/* every part on a worker; returns how many parts run (fewer than asked when workers could
 * not all start), or 0 when none could: then nothing runs and the caller does the work.
 * try_only: -1 instead of waiting when another job holds the pool (a caller holding
 * Python's GIL tries first, then waits without it). */
static int pool_start(pool_fn fn, void *arg, int n_parts, int try_only) {
    if (n_parts < 1)
        n_parts = 1;
    if (try_only) {
        if (pthread_mutex_trylock(&pool_.run_lock) != 0)
            return -1;
    } else {
        pthread_mutex_lock(&pool_.run_lock);
    }
    pthread_mutex_lock(&pool_.mu);
    n_parts = pool_grow(n_parts + 1) - 1;
    if (n_parts < 1) {
        pthread_mutex_unlock(&pool_.mu);
        pthread_mutex_unlock(&pool_.run_lock);
        return 0;
    }
    pool_.fn = fn;
    pool_.arg = arg;
    pool_.n_parts = n_parts;
    pool_.first = 0;
    pool_.pending = n_parts;
    pool_.gen++;
    pthread_cond_broadcast(&pool_.go);
    pthread_mutex_unlock(&pool_.mu);
    return n_parts;
}

/* after a pool_start that returned > 0: wait for its parts, give the pool back */
static void pool_finish(void) {
    pthread_mutex_lock(&pool_.mu);
    while (pool_.pending > 0)
        pthread_cond_wait(&pool_.done, &pool_.mu);
    pthread_mutex_unlock(&pool_.mu);
    pthread_mutex_unlock(&pool_.run_lock);
}

typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
} pool_latch;

static void latch_init(pool_latch *l) {
    pthread_mutex_init(&l->mu, NULL);
    pthread_cond_init(&l->cv, NULL);
}

static void latch_destroy(pool_latch *l) {
    pthread_cond_destroy(&l->cv);
    pthread_mutex_destroy(&l->mu);
}

/* *slot = value (>= 0), and wake whoever waits for it */
static void latch_set(pool_latch *l, int32_t *slot, int32_t value) {
    pthread_mutex_lock(&l->mu);
    __atomic_store_n(slot, value, __ATOMIC_RELEASE);
    pthread_cond_broadcast(&l->cv);
    pthread_mutex_unlock(&l->mu);
}

static inline int latch_ready(const int32_t *slot) {
    return __atomic_load_n(slot, __ATOMIC_ACQUIRE) >= 0;
}

/* until *slot >= 0 */
static void latch_wait(pool_latch *l, const int32_t *slot) {
    if (latch_ready(slot))
        return;
    pthread_mutex_lock(&l->mu);
    while (!latch_ready(slot))
        pthread_cond_wait(&l->cv, &l->mu);
    pthread_mutex_unlock(&l->mu);
}
#else
#include <stdint.h>
static int pool_parts(int n_parts) { (void)n_parts; return 1; }
static void pool_run(pool_fn fn, void *arg, int n_parts) { (void)n_parts; fn(arg, 0, 1); }
static int pool_start(pool_fn fn, void *arg, int n_parts, int try_only) {
    (void)fn; (void)arg; (void)n_parts; (void)try_only;
    return 0;
}
static void pool_finish(void) {}
typedef struct { int unused; } pool_latch;
static void latch_init(pool_latch *l) { (void)l; }
static void latch_destroy(pool_latch *l) { (void)l; }
static void latch_set(pool_latch *l, int32_t *slot, int32_t value) { (void)l; *slot = value; }
static inline int latch_ready(const int32_t *slot) { return *slot >= 0; }
static void latch_wait(pool_latch *l, const int32_t *slot) { (void)l; (void)slot; }
#endif

#endif
