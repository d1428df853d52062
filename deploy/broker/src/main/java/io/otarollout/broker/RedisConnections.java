package io.otarollout.broker;

import io.lettuce.core.ClientOptions;
import io.lettuce.core.RedisClient;
import io.lettuce.core.RedisURI;
import io.lettuce.core.SocketOptions;
import io.lettuce.core.TimeoutOptions;
import io.lettuce.core.resource.ClientResources;
import io.lettuce.core.resource.DefaultClientResources;
import io.lettuce.core.resource.Delay;
import java.time.Duration;
import java.util.concurrent.TimeUnit;

/**
 * The Lettuce client of the credential store, shared by the credential look-ups and the
 * revocation subscription. Commands fail at once while disconnected (rather than queue until
 * Redis returns: a device waiting on a dead store is refused as auth_unavailable and retries)
 * and time out after the authentication timeout; Lettuce reconnects by itself once a
 * connection has been made (and re-subscribes a pub/sub one).
 */
final class RedisConnections implements AutoCloseable {
    private final ClientResources resources;
    private final RedisClient client;
    private final RedisURI uri;

    RedisConnections(String url, Duration timeout) {
        this.uri = RedisURI.create(url);
        // Two I/O threads are plenty for one connection and one subscription. Reconnect
        // attempts back off to 2 s, not Lettuce's 30 s: every device is refused until then.
        this.resources = DefaultClientResources.builder()
                .ioThreadPoolSize(2)
                .computationThreadPoolSize(2)
                .reconnectDelay(Delay.exponential(Duration.ofMillis(50), Duration.ofSeconds(2), 2, TimeUnit.MILLISECONDS))
                .build();
        this.client = RedisClient.create(resources);
        client.setOptions(ClientOptions.builder()
                .autoReconnect(true)
                .disconnectedBehavior(ClientOptions.DisconnectedBehavior.REJECT_COMMANDS)
                .timeoutOptions(TimeoutOptions.enabled(timeout))
                .socketOptions(SocketOptions.builder().connectTimeout(timeout).build())
                .build());
    }

    RedisClient client() {
        return client;
    }

    RedisURI uri() {
        return uri;
    }

    @Override
    public void close() {
        client.shutdown(0, 2, TimeUnit.SECONDS);
        resources.shutdown(0, 2, TimeUnit.SECONDS);
    }
}
