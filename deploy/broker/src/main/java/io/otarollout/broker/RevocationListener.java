package io.otarollout.broker;

import io.lettuce.core.RedisChannelHandler;
import io.lettuce.core.RedisConnectionStateListener;
import io.lettuce.core.codec.StringCodec;
import io.lettuce.core.pubsub.RedisPubSubAdapter;
import io.lettuce.core.pubsub.StatefulRedisPubSubConnection;
import java.net.SocketAddress;
import java.util.Optional;
import java.util.concurrent.Executors;
import java.util.concurrent.ScheduledExecutorService;
import java.util.concurrent.TimeUnit;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Listens on the revocation channel of the credential store and disconnects every live
 * connection of a device whose credentials were rotated, disabled or deleted (its next
 * CONNECT is checked against the new record). Pub/sub is fire-once: a message published while
 * the subscription is down is lost, as it would be for a broker that is down; the devices
 * of a missed revocation stay connected until they reconnect. The first subscription is
 * retried every second until Redis answers; afterwards Lettuce reconnects and re-subscribes.
 */
final class RevocationListener implements AutoCloseable {
    private static final Logger LOG = LoggerFactory.getLogger(RevocationListener.class);
    private static final long RETRY_S = 1;

    private final RedisConnections redis;
    private final String channel;
    private final DeviceKicker kicker;
    private final BrokerMetrics metrics;
    private final ScheduledExecutorService retry = Executors.newSingleThreadScheduledExecutor(r -> {
        Thread thread = new Thread(r, "ota-revocations-retry");
        thread.setDaemon(true);
        return thread;
    });
    private volatile StatefulRedisPubSubConnection<String, String> connection;
    private volatile boolean failing;

    RevocationListener(RedisConnections redis, String channel, DeviceKicker kicker, BrokerMetrics metrics) {
        this.redis = redis;
        this.channel = channel;
        this.kicker = kicker;
        this.metrics = metrics;
    }

    void start() {
        redis.client().addListener(new RedisConnectionStateListener() {
            @Override
            public void onRedisDisconnected(RedisChannelHandler<?, ?> handler) {
                if (handler == connection) {
                    metrics.revocationsSubscribed(false);
                    LOG.warn("revocations: lost the subscription to {}; Lettuce reconnects", channel);
                }
            }

            @Override
            public void onRedisConnected(RedisChannelHandler<?, ?> handler, SocketAddress address) {}
        });
        subscribe();
    }

    private void subscribe() {
        redis.client().connectPubSubAsync(StringCodec.UTF8, redis.uri())
                .thenCompose(made -> {
                    connection = made;
                    made.addListener(new RedisPubSubAdapter<>() {
                        @Override
                        public void message(String from, String message) {
                            onMessage(message);
                        }

                        @Override
                        public void subscribed(String to, long count) {
                            // Also after each reconnect, once Lettuce subscribed again.
                            metrics.revocationsSubscribed(true);
                            LOG.info("revocations: subscribed to {}", to);
                        }
                    });
                    return made.async().subscribe(channel);
                })
                .whenComplete((ok, error) -> {
                    if (error == null) {
                        failing = false;
                        return;
                    }
                    if (!failing) {
                        LOG.warn("revocations: cannot subscribe to {} ({}); retrying every {} s",
                                channel, RedisDeviceAuth.describe(error), RETRY_S);
                    }
                    failing = true;
                    StatefulRedisPubSubConnection<String, String> half = connection;
                    if (half != null) {
                        connection = null;
                        half.closeAsync();
                    }
                    if (!retry.isShutdown()) {
                        retry.schedule(this::subscribe, RETRY_S, TimeUnit.SECONDS);
                    }
                });
    }

    void onMessage(String message) {
        Optional<Revocation> revocation = Revocation.parse(message);
        if (revocation.isEmpty()) {
            metrics.revocation("malformed");
            LOG.warn("revocations: ignored a message that is not {{\"device_id\", \"action\"}}");
            return;
        }
        Revocation r = revocation.get();
        metrics.revocation(r.action());
        kicker.kick(r.deviceId(), "credentials " + r.action())
                .thenAccept(metrics::revocationDisconnects);
    }

    @Override
    public void close() {
        retry.shutdownNow();
        StatefulRedisPubSubConnection<String, String> current = connection;
        if (current != null) {
            current.close();
        }
    }
}
