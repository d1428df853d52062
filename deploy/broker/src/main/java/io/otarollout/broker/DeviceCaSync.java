package io.otarollout.broker;

import io.lettuce.core.api.StatefulRedisConnection;
import io.lettuce.core.codec.StringCodec;
import java.io.IOException;
import java.io.OutputStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.security.GeneralSecurityException;
import java.security.KeyStore;
import java.security.cert.X509Certificate;
import java.time.Duration;
import java.util.Map;
import java.util.concurrent.Executors;
import java.util.concurrent.ScheduledExecutorService;
import java.util.concurrent.TimeUnit;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Keeps {@link DeviceCas} and the device TLS listener's truststore equal to the registered
 * device CAs: one HGETALL of the store's hash every refresh period, on a thread of its own
 * (never HiveMQ's). When the set changed, the truststore file is rewritten (a new file moved
 * over the old one); HiveMQ checks its TLS files every 10 s and reloads them, so a newly
 * registered CA is accepted by the handshake within refresh + 10 s, and a removed one is
 * refused by the extension at the next refresh (before HiveMQ reloads). A failed read keeps
 * the last set (logged once per failure streak).
 */
final class DeviceCaSync implements AutoCloseable {
    /** The truststore holds public certificates only; its password protects nothing. */
    static final String TRUSTSTORE_PASSWORD = "ota-device-cas";
    private static final Logger LOG = LoggerFactory.getLogger(DeviceCaSync.class);

    private final RedisConnections redis;
    private final String key;
    private final Path truststore;
    private final Duration period;
    private final DeviceCas cas;
    private final BrokerMetrics metrics;
    private final ScheduledExecutorService timer = Executors.newSingleThreadScheduledExecutor(runnable -> {
        Thread thread = new Thread(runnable, "ota-device-cas");
        thread.setDaemon(true);
        return thread;
    });
    private StatefulRedisConnection<String, String> connection;
    private boolean failing;

    DeviceCaSync(RedisConnections redis, String key, Path truststore, Duration period, DeviceCas cas,
            BrokerMetrics metrics) {
        this.redis = redis;
        this.key = key;
        this.truststore = truststore;
        this.period = period;
        this.cas = cas;
        this.metrics = metrics;
    }

    DeviceCas cas() {
        return cas;
    }

    /** Before HiveMQ starts: one read (a store that is down leaves the set empty) and the
     * truststore written, so the listener starts with what is registered. */
    void loadNow() throws IOException, GeneralSecurityException {
        refreshOnce();
        write(truststore, cas.cas()); // also when unchanged: a previous run's file may differ
    }

    void start() {
        timer.scheduleWithFixedDelay(this::refreshQuietly, period.toMillis(), period.toMillis(), TimeUnit.MILLISECONDS);
    }

    private void refreshQuietly() {
        try {
            refreshOnce();
        } catch (IOException | GeneralSecurityException | RuntimeException e) {
            LOG.error("device CAs: cannot write the truststore {}: {}", truststore, e.toString());
        }
    }

    private synchronized void refreshOnce() throws IOException, GeneralSecurityException {
        Map<String, String> entries;
        try {
            if (connection == null || !connection.isOpen()) {
                connection = redis.client().connect(StringCodec.UTF8, redis.uri());
            }
            entries = connection.sync().hgetall(key);
        } catch (RuntimeException e) {
            if (!failing) {
                LOG.warn("device CAs: cannot read {} ({}); keeping the {} known", key, e.toString(),
                        cas.cas().size());
            }
            failing = true;
            return;
        }
        failing = false;
        DeviceCas.Parsed parsed = DeviceCas.parse(entries);
        for (String problem : parsed.problems()) {
            LOG.warn("device CAs: entry refused: {}", problem);
        }
        metrics.deviceCas(parsed.cas().size(), parsed.problems().size());
        if (cas.replace(parsed)) {
            write(truststore, parsed.cas());
            LOG.info("device CAs: {} registered {}", parsed.cas().size(), parsed.cas().keySet());
        }
    }

    /** A PKCS12 truststore of the CAs, aliases their fingerprints, replaced atomically. */
    static void write(Path file, Map<String, X509Certificate> cas) throws IOException, GeneralSecurityException {
        KeyStore store = KeyStore.getInstance("PKCS12");
        store.load(null, null);
        for (Map.Entry<String, X509Certificate> ca : cas.entrySet()) {
            store.setCertificateEntry(ca.getKey(), ca.getValue());
        }
        Files.createDirectories(file.getParent());
        Path next = file.resolveSibling(file.getFileName() + ".next");
        try (OutputStream out = Files.newOutputStream(next)) {
            store.store(out, TRUSTSTORE_PASSWORD.toCharArray());
        }
        Files.move(next, file, StandardCopyOption.REPLACE_EXISTING, StandardCopyOption.ATOMIC_MOVE);
    }

    @Override
    public void close() {
        timer.shutdownNow();
        if (connection != null) {
            connection.close();
        }
        redis.close();
    }
}
