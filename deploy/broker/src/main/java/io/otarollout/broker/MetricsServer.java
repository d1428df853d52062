package io.otarollout.broker;

import com.sun.net.httpserver.HttpExchange;
import com.sun.net.httpserver.HttpServer;
import java.io.IOException;
import java.io.OutputStream;
import java.net.InetSocketAddress;
import java.nio.charset.StandardCharsets;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;

/** GET /metrics (Prometheus text) and GET /health on a loopback port, with the JDK's server. */
final class MetricsServer implements AutoCloseable {
    private final HttpServer server;
    private final ExecutorService executor;

    MetricsServer(String host, int port, BrokerMetrics metrics, java.util.function.BooleanSupplier ready)
            throws IOException {
        server = HttpServer.create(new InetSocketAddress(host, port), 16);
        executor = Executors.newSingleThreadExecutor(r -> {
            Thread thread = new Thread(r, "ota-metrics-http");
            thread.setDaemon(true);
            return thread;
        });
        server.setExecutor(executor);
        server.createContext("/metrics", exchange ->
                reply(exchange, 200, "text/plain; version=0.0.4", metrics.render()));
        server.createContext("/health", exchange -> {
            boolean up = ready.getAsBoolean();
            reply(exchange, up ? 200 : 503, "text/plain", up ? "ok\n" : "starting\n");
        });
    }

    void start() {
        server.start();
    }

    int port() {
        return server.getAddress().getPort();
    }

    private static void reply(HttpExchange exchange, int status, String type, String body)
            throws IOException {
        try (exchange) {
            if (!"GET".equals(exchange.getRequestMethod())) {
                exchange.sendResponseHeaders(405, -1);
                return;
            }
            byte[] bytes = body.getBytes(StandardCharsets.UTF_8);
            exchange.getResponseHeaders().set("Content-Type", type);
            exchange.sendResponseHeaders(status, bytes.length);
            try (OutputStream out = exchange.getResponseBody()) {
                out.write(bytes);
            }
        }
    }

    @Override
    public void close() {
        server.stop(0);
        executor.shutdownNow();
    }
}
