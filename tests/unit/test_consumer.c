/* The consumer's rule for a failed batch (lib/consumer.h): the messages
 * that fail by themselves are set aside; a failure every message shares
 * is the database's, and sets nothing aside. The rest of the consumer runs
 * against the real Kafka and PostgreSQL (tests/integration, tests/chaos). */
#include "lib/consumer.h"

#include <criterion/criterion.h>

static const consumer_alone ok = {false, ""};

static consumer_alone failed(const char *sqlstate)
{
    consumer_alone a = {.failed = true};
    snprintf(a.sqlstate, sizeof a.sqlstate, "%s", sqlstate);
    return a;
}

Test(consumer, a_message_that_fails_alone_is_set_aside_and_the_others_go_through)
{
    consumer_alone alone[] = {ok, failed("22P02"), ok};
    bool aside[3];
    cr_assert_not(consumer_fault_is_systemic("22P02", alone, 3, aside));
    cr_assert_not(aside[0]);
    cr_assert(aside[1]);
    cr_assert_not(aside[2]);
}

Test(consumer, every_message_failing_as_the_batch_did_is_the_databases_fault)
{
    /* A renamed function (42883) or a revoked privilege (42501): each
     * message fails alone exactly as the batch did. */
    consumer_alone alone[] = {failed("42883"), failed("42883"), failed("42883")};
    bool aside[3] = {true, true, true};
    cr_assert(consumer_fault_is_systemic("42883", alone, 3, aside));
    for (int i = 0; i < 3; i++)
        cr_assert_not(aside[i], "message %d set aside", i);
}

Test(consumer, a_lone_message_failing_as_its_batch_is_its_own_fault)
{
    consumer_alone alone[] = {failed("23514")};
    bool aside[1];
    cr_assert_not(consumer_fault_is_systemic("23514", alone, 1, aside));
    cr_assert(aside[0]);
}

Test(consumer, failures_of_other_kinds_are_each_their_own)
{
    /* All failed, but not all as the batch did: none is the database's. */
    consumer_alone alone[] = {failed("23514"), failed("22P02"), failed("23514")};
    bool aside[3];
    cr_assert_not(consumer_fault_is_systemic("23514", alone, 3, aside));
    for (int i = 0; i < 3; i++)
        cr_assert(aside[i], "message %d", i);
    /* One went through: the batch's failure was not everyone's. */
    consumer_alone some[] = {failed("23514"), ok, failed("23514")};
    cr_assert_not(consumer_fault_is_systemic("23514", some, 3, aside));
    cr_assert(aside[0] && !aside[1] && aside[2]);
}
