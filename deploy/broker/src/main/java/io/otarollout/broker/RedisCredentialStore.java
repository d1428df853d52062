package io.otarollout.broker;

import io.lettuce.core.KeyValue;
import io.lettuce.core.api.StatefulRedisConnection;
import io.lettuce.core.codec.StringCodec;
import java.time.Duration;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicReference;
import java.util.function.LongSupplier;

/**
 * Reads device records (one HMGET) over one shared connection: Lettuce pipelines concurrent
 * commands on it. Redis may be down when the broker starts: the first connection is made on
 * demand, and after a failed attempt look-ups fail at once (auth_unavailable) until the next
 * attempt, at most one per {@link #RETRY_NANOS}, so a reconnect storm does not become a
 * connection storm. Once connected, Lettuce reconnects by itself.
 */
final class RedisCredentialStore {
    static final long RETRY_NANOS = TimeUnit.SECONDS.toNanos(1);

    private final RedisConnections redis;
    private final String prefix;
    private final Duration timeout;
    private final LongSupplier nanoTime;
    private final AtomicReference<CompletableFuture<StatefulRedisConnection<String, String>>> connection =
            new AtomicReference<>();
    private volatile long failedAt;

    RedisCredentialStore(RedisConnections redis, String prefix, Duration timeout, LongSupplier nanoTime) {
        this.redis = redis;
        this.prefix = prefix;
        this.timeout = timeout;
        this.nanoTime = nanoTime;
    }

    /** Connects now, so the first device does not wait for it; a failure is retried on demand. */
    void start() {
        connection();
    }

    /** The device's record (fields null when absent); completes exceptionally on a store
     * error, or after the timeout. Never blocks. */
    CompletableFuture<StoredCredential> fetch(String deviceId) {
        return connection()
                .thenCompose(c -> c.async().hmget(prefix + deviceId, StoredCredential.FIELDS).toCompletableFuture())
                .thenApply(RedisCredentialStore::record)
                .orTimeout(timeout.toMillis(), TimeUnit.MILLISECONDS);
    }

    private static StoredCredential record(List<KeyValue<String, String>> values) {
        return new StoredCredential(value(values, 0), value(values, 1), value(values, 2), value(values, 3));
    }

    private static String value(List<KeyValue<String, String>> values, int i) {
        return values.size() > i ? values.get(i).getValueOrElse(null) : null;
    }

    private CompletableFuture<StatefulRedisConnection<String, String>> connection() {
        CompletableFuture<StatefulRedisConnection<String, String>> current = connection.get();
        if (current != null && (!current.isCompletedExceptionally() || nanoTime.getAsLong() - failedAt < RETRY_NANOS)) {
            return current;
        }
        CompletableFuture<StatefulRedisConnection<String, String>> next = new CompletableFuture<>();
        if (!connection.compareAndSet(current, next)) {
            return connection.get();
        }
        redis.client().connectAsync(StringCodec.UTF8, redis.uri()).whenComplete((made, error) -> {
            if (error != null) {
                failedAt = nanoTime.getAsLong(); // before completing: readers compare against it
                next.completeExceptionally(error);
            } else {
                next.complete(made);
            }
        });
        return next;
    }

    void close() {
        CompletableFuture<StatefulRedisConnection<String, String>> current = connection.get();
        if (current != null && current.isDone() && !current.isCompletedExceptionally()) {
            current.join().close();
        }
    }
}
