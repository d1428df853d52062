package io.otarollout.broker;

import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.time.Duration;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CompletionException;

/**
 * Asks the control plane whether a device may connect ({@link AuthContract} is the format).
 * Non-blocking: the future completes on the HTTP client's threads, never exceptionally;
 * every failure (status, timeout, refused connection, bad body) is AUTH_UNAVAILABLE.
 */
final class AuthClient {
    private final HttpClient http;
    private final URI url;
    private final String bearer;
    private final Duration timeout;

    AuthClient(URI url, String key, Duration timeout) {
        this.url = url;
        this.bearer = "Bearer " + key;
        this.timeout = timeout;
        this.http = HttpClient.newBuilder()
                .version(HttpClient.Version.HTTP_1_1)
                .connectTimeout(timeout)
                .followRedirects(HttpClient.Redirect.NEVER)
                .build();
    }

    /** {@code certificate}: the facts of the device's client certificate, null without one. */
    CompletableFuture<AuthDecision> authenticate(
            String clientId, String username, String password, String peerHost,
            CertificateFacts certificate) {
        HttpRequest request = HttpRequest.newBuilder(url)
                .timeout(timeout)
                .header("Authorization", bearer)
                .header("Content-Type", "application/json")
                .POST(HttpRequest.BodyPublishers.ofByteArray(
                        AuthContract.request(clientId, username, password, peerHost, certificate)))
                .build();
        return http.sendAsync(request, HttpResponse.BodyHandlers.ofByteArray())
                .handle((response, error) -> {
                    if (error != null) {
                        return AuthDecision.unavailable(describe(error));
                    }
                    try {
                        return AuthContract.decide(response.statusCode(), response.body());
                    } catch (AuthContract.BadResponse bad) {
                        return AuthDecision.unavailable(bad.getMessage());
                    }
                });
    }

    private static String describe(Throwable error) {
        Throwable cause = error instanceof CompletionException && error.getCause() != null
                ? error.getCause() : error;
        String message = cause.getMessage();
        return cause.getClass().getSimpleName() + (message == null ? "" : ": " + message);
    }
}
