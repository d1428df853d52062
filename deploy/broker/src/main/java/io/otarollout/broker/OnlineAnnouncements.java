package io.otarollout.broker;

import java.util.UUID;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ConcurrentHashMap;

/**
 * Keeps a device connection's offline event behind its online event. The online event is
 * published only once the downlink subscriptions exist, so a device that drops at once
 * could otherwise announce "offline" first and be taken for online. Keyed by a token per
 * connection (kept in its attribute store), so a take-over's two connections do not mix.
 */
final class OnlineAnnouncements {
    private final ConcurrentHashMap<String, CompletableFuture<Void>> pending = new ConcurrentHashMap<>();

    static String newToken() {
        return UUID.randomUUID().toString();
    }

    void started(String token, CompletableFuture<Void> announcement) {
        pending.put(token, announcement);
    }

    /** The connection's announcement (done already if there was none), forgotten here. */
    CompletableFuture<Void> ended(String token) {
        CompletableFuture<Void> announcement = pending.remove(token);
        return announcement == null ? CompletableFuture.completedFuture(null) : announcement;
    }
}
