package io.otarollout.broker;

import com.hivemq.configuration.service.InternalConfigurations;
import com.hivemq.embedded.EmbeddedExtension;
import com.hivemq.embedded.EmbeddedHiveMQ;
import java.io.IOException;
import java.io.InputStream;
import java.net.InetSocketAddress;
import java.net.Socket;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;

/**
 * Starts the device broker: HiveMQ CE embedded with {@link OtaExtension}, configured from the
 * environment ({@link BrokerConfig}), plus the metrics endpoint. Exit codes: 2 bad settings,
 * 1 failed start. Stops on SIGTERM.
 */
public final class Launcher {
    private Launcher() {}

    public static void main(String[] args) {
        BrokerConfig config;
        try {
            config = BrokerConfig.fromEnv(System.getenv());
            if (config.tlsPort() != 0 && !Files.isReadable(config.tlsKeystore())) {
                throw new ConfigException("OTA_BROKER_TLS_KEYSTORE=" + config.tlsKeystore()
                        + " is not a readable file");
            }
        } catch (ConfigException e) {
            System.err.println("ota-broker: " + e.getMessage());
            System.exit(2);
            return;
        }
        try {
            run(config);
        } catch (Exception e) {
            System.err.println("ota-broker: start failed: " + e);
            e.printStackTrace(System.err);
            System.exit(1);
        }
    }

    private static void run(BrokerConfig config) throws Exception {
        for (Path folder : new Path[] {config.configFolder(), config.dataFolder(), config.extensionsFolder()}) {
            Files.createDirectories(folder);
        }
        Files.writeString(config.configFolder().resolve("config.xml"), HiveMqConfigXml.render(config));
        try (InputStream logback = Launcher.class.getResourceAsStream("/ota-broker-logback.xml")) {
            if (logback == null) {
                throw new IOException("ota-broker-logback.xml is missing from the jar");
            }
            Files.write(config.configFolder().resolve("logback.xml"), logback.readAllBytes());
        }

        BrokerMetrics metrics = new BrokerMetrics();
        DeviceCaSync deviceCas = null;
        if (config.deviceCertificates()) {
            deviceCas = new DeviceCaSync(new RedisConnections(config.redisUrl(), config.authTimeout()),
                    config.deviceCaKey(), config.deviceCaTruststore(), config.deviceCaRefresh(),
                    new DeviceCas(), metrics);
            deviceCas.loadNow(); // the TLS listener starts with the CAs registered now
        }
        AtomicBoolean ready = new AtomicBoolean(false);
        MetricsServer metricsServer = config.metricsPort() == 0 ? null
                : new MetricsServer(config.metricsHost(), config.metricsPort(), metrics, ready::get);
        EmbeddedHiveMQ hivemq = EmbeddedHiveMQ.builder()
                .withConfigurationFolder(config.configFolder())
                .withDataFolder(config.dataFolder())
                .withExtensionsFolder(config.extensionsFolder())
                .withEmbeddedExtension(EmbeddedExtension.builder()
                        .withId("ota-device-access")
                        .withName("OTA device access")
                        .withVersion("1")
                        .withAuthor("ota-rollout")
                        .withPriority(1000)
                        .withStartPriority(1000)
                        .withExtensionMain(new OtaExtension(config, metrics,
                                deviceCas == null ? new DeviceCas() : deviceCas.cas()))
                        .build())
                .build();
        // Internal switches, not public API (HiveMQ is pinned in pom.xml, and the integration
        // tests fail if either stops working). Both are read at start, and build() resets the
        // second ("Setting default authentication behavior to ALLOW ALL"), so they go here.
        // IoTDA's topics start with '$oc/'; HiveMQ otherwise disconnects a client publishing there.
        InternalConfigurations.MQTT_ALLOW_DOLLAR_TOPICS.set(true);
        // Embedded HiveMQ lets everyone in when no authenticator answers.
        InternalConfigurations.AUTH_DENY_UNAUTHENTICATED_CONNECTIONS.set(true);
        // HiveMQ sends a client at most 50 unacknowledged QoS 1 publishes, read from its queue
        // 50 at a time, whatever receive maximum the client announced. The gateway acknowledges
        // after Kafka has the record (a few ms), so 50 per round trip capped the whole uplink at
        // ~2,000 messages/s; the window follows the gateway's receive maximum instead.
        InternalConfigurations.MAX_INFLIGHT_WINDOW_SIZE_MESSAGES = config.inflightWindow();
        InternalConfigurations.PUBLISH_POLL_BATCH_SIZE = config.inflightWindow();

        CountDownLatch stopped = new CountDownLatch(1);
        DeviceCaSync caSync = deviceCas;
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            ready.set(false);
            try {
                hivemq.stop().get(20, TimeUnit.SECONDS);
            } catch (Exception e) {
                System.err.println("ota-broker: stop: " + e);
            }
            if (metricsServer != null) {
                metricsServer.close();
            }
            if (caSync != null) {
                caSync.close();
            }
            stopped.countDown();
        }, "ota-broker-shutdown"));

        if (metricsServer != null) {
            metricsServer.start();
        }
        hivemq.start().join();
        if (caSync != null) {
            caSync.start();
        }
        // HiveMQ logs a listener that failed to bind and carries on; a broker missing a
        // listener must not look healthy.
        requireListening(config.deviceHost(), config.tlsPort(), "OTA_BROKER_TLS_PORT");
        requireListening(config.deviceHost(), config.plainPort(), "OTA_BROKER_PORT");
        requireListening(config.platformHost(), config.platformPort(), "OTA_BROKER_PLATFORM_PORT");
        ready.set(true);
        System.out.println("ota-broker: ready; " + config);
        System.out.flush();
        stopped.await();
    }

    private static void requireListening(String host, int port, String setting) throws IOException {
        if (port == 0) {
            return;
        }
        String connectHost = "0.0.0.0".equals(host) ? "127.0.0.1" : host;
        try (Socket socket = new Socket()) {
            socket.connect(new InetSocketAddress(connectHost, port), 2000);
        } catch (IOException e) {
            throw new IOException("no listener on " + host + ":" + port + " (" + setting
                    + "); see the log above for why HiveMQ could not bind it", e);
        }
    }
}
