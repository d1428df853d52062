package io.otarollout.broker;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.charset.StandardCharsets;
import java.util.Set;
import java.util.concurrent.atomic.AtomicLong;
import org.junit.jupiter.api.Test;

class SmallPartsTest {
    @Test
    void rateLimiterAdmitsABurstThenTheRate() {
        AtomicLong now = new AtomicLong();
        ConnectRateLimiter limiter = new ConnectRateLimiter(10, now::get);
        for (int i = 0; i < 10; i++) {
            assertTrue(limiter.tryAcquire());
        }
        assertFalse(limiter.tryAcquire());
        now.addAndGet(100_000_000L); // 0.1 s: one more token
        assertTrue(limiter.tryAcquire());
        assertFalse(limiter.tryAcquire());
    }

    @Test
    void rateZeroIsUnlimited() {
        ConnectRateLimiter limiter = new ConnectRateLimiter(0, () -> 0L);
        for (int i = 0; i < 1000; i++) {
            assertTrue(limiter.tryAcquire());
        }
    }

    @Test
    void deviceIndexCountsConnectionsPerClientId() {
        DeviceIndex index = new DeviceIndex();
        index.add("d1", "c1");
        index.add("d1", "c1"); // take-over: the new connection before the old one's end
        index.add("d1", "c2");
        assertEquals(Set.of("c1", "c2"), index.clientsOf("d1"));
        index.remove("d1", "c1");
        assertEquals(Set.of("c1", "c2"), index.clientsOf("d1"));
        index.remove("d1", "c1");
        index.remove("d1", "c2");
        assertEquals(Set.of(), index.clientsOf("d1"));
        index.remove("d1", "c2"); // a stray end is harmless
        assertEquals(Set.of(), index.clientsOf("d2"));
    }

    @Test
    void platformPasswordCompare() {
        PlatformAccount account = new PlatformAccount("ota-platform", "s3cret");
        assertTrue(account.isPlatformUser("ota-platform"));
        assertFalse(account.isPlatformUser("dev-1"));
        assertTrue(account.passwordMatches("s3cret".getBytes(StandardCharsets.UTF_8)));
        assertFalse(account.passwordMatches("s3cre".getBytes(StandardCharsets.UTF_8)));
        assertFalse(account.passwordMatches(new byte[0]));
    }

    @Test
    void metricsInPrometheusText() {
        BrokerMetrics metrics = new BrokerMetrics();
        metrics.connect(Reason.OK);
        metrics.connect(Reason.BAD_PASSWORD);
        metrics.connect(Reason.BAD_PASSWORD);
        metrics.connected(BrokerMetrics.Kind.DEVICE);
        String text = metrics.render();
        assertTrue(text.contains("ota_broker_connects_total{result=\"allow\",reason=\"ok\"} 1\n"), text);
        assertTrue(text.contains("ota_broker_connects_total{result=\"deny\",reason=\"bad_password\"} 2\n"), text);
        assertTrue(text.contains("ota_broker_connected_clients{kind=\"device\"} 1\n"), text);
        assertTrue(text.contains("ota_broker_connected_clients{kind=\"platform\"} 0\n"), text);
    }
}
