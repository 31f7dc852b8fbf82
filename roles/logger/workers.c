/* Worker threads for blocking store calls, handing results back to the loop. */
#include "workers.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>

#include "log.h"
#include "util.h"

struct job {
    logger_work_fn work;      /* worker side */
    loop_fn done;             /* loop side */
    void *arg;                /* owned by the job's creator until done */
    struct logger_workers *w; /* back-pointer for the busy count */
    struct job *next;         /* queue link */
};

struct logger_workers {
    struct loop *loop;       /* borrowed */
    pthread_t *threads;      /* owned, n of them */
    int n;                   /* threads started */
    pthread_mutex_t lock;    /* guards the queue and quit */
    pthread_cond_t wake;     /* signalled on submit and quit */
    struct job *head, *tail; /* FIFO of jobs not yet started */
    bool quit;               /* threads exit once the queue is empty */
    size_t busy;             /* loop thread only: submitted, done not yet run */
};

/* On the loop thread: the job's completion, then the job itself goes. */
static void
job_done(void *arg)
{
    struct job *j = arg;
    j->w->busy--;
    j->done(j->arg);
    free(j);
}

static void *
worker_main(void *arg)
{
    struct logger_workers *w = arg;
    log_set_role("logger");
    for (;;) {
        pthread_mutex_lock(&w->lock);
        while (w->head == NULL && !w->quit) {
            pthread_cond_wait(&w->wake, &w->lock);
        }
        struct job *j = w->head;
        if (j == NULL) {
            pthread_mutex_unlock(&w->lock);
            return NULL;
        }
        w->head = j->next;
        if (w->head == NULL) {
            w->tail = NULL;
        }
        pthread_mutex_unlock(&w->lock);
        j->work(j->arg);
        loop_post(w->loop, job_done, j);
    }
}

struct logger_workers *
logger_workers_new(struct loop *loop, int n)
{
    struct logger_workers *w = xcalloc(1, sizeof(*w));
    w->loop = loop;
    w->threads = xcalloc((size_t)n, sizeof(*w->threads));
    pthread_mutex_init(&w->lock, NULL);
    pthread_cond_init(&w->wake, NULL);
    for (; w->n < n; w->n++) {
        if (pthread_create(&w->threads[w->n], NULL, worker_main, w) != 0) {
            log_error("thread_failed", "what=logger_worker");
            abort();
        }
    }
    return w;
}

void
logger_workers_submit(struct logger_workers *w, logger_work_fn work, loop_fn done, void *arg)
{
    struct job *j = xcalloc(1, sizeof(*j));
    j->work = work;
    j->done = done;
    j->arg = arg;
    j->w = w;
    w->busy++;
    pthread_mutex_lock(&w->lock);
    if (w->tail) {
        w->tail->next = j;
    } else {
        w->head = j;
    }
    w->tail = j;
    pthread_cond_signal(&w->wake);
    pthread_mutex_unlock(&w->lock);
}

size_t
logger_workers_busy(const struct logger_workers *w)
{
    return w->busy;
}

void
logger_workers_free(struct logger_workers *w)
{
    if (w == NULL) {
        return;
    }
    pthread_mutex_lock(&w->lock);
    w->quit = true;
    pthread_cond_broadcast(&w->wake);
    pthread_mutex_unlock(&w->lock);
    for (int i = 0; i < w->n; i++) {
        pthread_join(w->threads[i], NULL);
    }
    pthread_cond_destroy(&w->wake);
    pthread_mutex_destroy(&w->lock);
    free(w->threads);
    free(w);
}
