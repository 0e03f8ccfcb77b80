/* A small pool of OS threads for the engine's batch sampling (sampling/_chain.pyx
 * sample_rows): pool_run(fn, arg, n) calls fn(arg, part, n) for part 0..n-1, part 0 on the
 * calling thread and the others on workers, and returns when all are done. No Python
 * object is touched: the caller has released the GIL.
 *
 * Workers start on first use, at most POOL_MAX, and sleep on a condition variable between
 * jobs (no spinning: on a machine whose cores decode, a spinning helper would slow the
 * decode). One job at a time: concurrent callers queue on run_lock. After fork() the child
 * has no workers (pthread_atfork resets the pool). Without POSIX threads every part runs
 * on the caller.
 */
#ifndef SAMPLING_POOL_H
#define SAMPLING_POOL_H

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
    int atfork;
    unsigned long start_gen[POOL_MAX];  /* the job number when worker i was started: it runs
                                           every later job, whenever it first gets the lock */
} pool_ = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER,
           PTHREAD_COND_INITIALIZER, 0, 0, 0, 0, 0, 0, 0, {0}};

static void *pool_main(void *p) {
    int id = (int)(intptr_t)p;      /* 1 .. POOL_MAX */
    unsigned long seen;
    pthread_mutex_lock(&pool_.mu);
    seen = pool_.start_gen[id];
    for (;;) {
        while (pool_.gen == seen)
            pthread_cond_wait(&pool_.go, &pool_.mu);
        seen = pool_.gen;
        if (id < pool_.n_parts) {
            pool_fn fn = pool_.fn;
            void *arg = pool_.arg;
            int n = pool_.n_parts;
            pthread_mutex_unlock(&pool_.mu);
            fn(arg, id, n);
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
#else
static int pool_parts(int n_parts) { (void)n_parts; return 1; }
static void pool_run(pool_fn fn, void *arg, int n_parts) { (void)n_parts; fn(arg, 0, 1); }
#endif

#endif
