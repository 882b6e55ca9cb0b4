/* What the payments service's handlers share: borrowed by every request,
 * created and destroyed by main. */
#ifndef PAYMENTS_APP_H
#define PAYMENTS_APP_H

#include "lib/db.h"
#include "lib/http.h"

#include <librdkafka/rdkafka.h>

typedef struct payments_app {
    db_pool *db;
    rd_kafka_t *producer;
} payments_app;

/* The routes of the payments API (DESIGN §8). */
extern const http_route payments_routes[];
extern const size_t payments_nroutes;

bool payments_ready(void *app, json_t *checks);

#endif
