package io.otarollout.broker;

import java.util.function.LongSupplier;

/**
 * A token bucket for CONNECTs (HiveMQ CE's config has no connection-rate limit): a burst of
 * one second's worth, refilled continuously. A rate of 0 admits everything. Refused clients
 * get SERVER_BUSY before the control plane is asked, so a reconnect storm cannot flood it.
 */
final class ConnectRateLimiter {
    private final long perSecond;
    private final LongSupplier nanoTime;
    private double tokens;
    private long last;

    ConnectRateLimiter(long perSecond, LongSupplier nanoTime) {
        this.perSecond = perSecond;
        this.nanoTime = nanoTime;
        this.tokens = perSecond;
        this.last = nanoTime.getAsLong();
    }

    synchronized boolean tryAcquire() {
        if (perSecond == 0) {
            return true;
        }
        long now = nanoTime.getAsLong();
        tokens = Math.min(perSecond, tokens + (now - last) * perSecond / 1e9);
        last = now;
        if (tokens < 1) {
            return false;
        }
        tokens -= 1;
        return true;
    }
}
