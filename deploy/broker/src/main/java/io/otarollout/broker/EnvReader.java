package io.otarollout.broker;

import java.net.URI;
import java.net.URISyntaxException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;

/**
 * Reads typed settings from an environment map and collects every problem, so one start
 * reports all bad variables at once ({@link #check()} throws {@link ConfigException}).
 */
final class EnvReader {
    private final Map<String, String> env;
    private final List<String> problems = new ArrayList<>();

    EnvReader(Map<String, String> env) {
        this.env = env;
    }

    private String raw(String name) {
        String value = env.get(name);
        return value == null ? "" : value.strip();
    }

    String string(String name, String fallback) {
        String value = raw(name);
        return value.isEmpty() ? fallback : value;
    }

    /** A value that must be set; the empty string after recording the problem. */
    String required(String name, String why) {
        String value = raw(name);
        if (value.isEmpty()) {
            problems.add(name + " is not set (" + why + ")");
        }
        return value;
    }

    int integer(String name, int fallback, int min, int max) {
        String value = raw(name);
        if (value.isEmpty()) {
            return fallback;
        }
        try {
            int parsed = Integer.parseInt(value);
            if (parsed >= min && parsed <= max) {
                return parsed;
            }
        } catch (NumberFormatException ignored) {
            // reported below, like an out-of-range number
        }
        problems.add(name + "=" + value + " is not an integer in " + min + ".." + max);
        return fallback;
    }

    int port(String name, int fallback) {
        return integer(name, fallback, 0, 65535);
    }

    Path path(String name, String why) {
        String value = required(name, why);
        return value.isEmpty() ? Path.of(".") : Path.of(value).toAbsolutePath().normalize();
    }

    URI httpUrl(String name, String why) {
        String value = required(name, why);
        if (value.isEmpty()) {
            return URI.create("http://invalid/");
        }
        try {
            URI uri = new URI(value);
            String scheme = uri.getScheme();
            if (("http".equals(scheme) || "https".equals(scheme)) && uri.getHost() != null) {
                return uri;
            }
        } catch (URISyntaxException ignored) {
            // reported below
        }
        problems.add(name + "=" + value + " is not an http:// or https:// URL with a host");
        return URI.create("http://invalid/");
    }

    /** One of {@code allowed} (lower case), or the fallback when unset. */
    String choice(String name, String fallback, String... allowed) {
        String value = raw(name).toLowerCase(java.util.Locale.ROOT);
        if (value.isEmpty()) {
            return fallback;
        }
        for (String option : allowed) {
            if (option.equals(value)) {
                return value;
            }
        }
        problems.add(name + "=" + raw(name) + " is not one of " + String.join(", ", allowed));
        return fallback;
    }

    /** A redis:// or rediss:// URL with a host, or "" when unset and not required. */
    String redisUrl(String name, boolean required, String why) {
        String value = required ? required(name, why) : raw(name);
        if (value.isEmpty()) {
            return "";
        }
        try {
            URI uri = new URI(value);
            String scheme = uri.getScheme();
            if (("redis".equals(scheme) || "rediss".equals(scheme)) && uri.getHost() != null) {
                io.lettuce.core.RedisURI.create(value); // Lettuce's own parse: the database number
                return value;
            }
        } catch (URISyntaxException | IllegalArgumentException ignored) {
            // reported below
        }
        problems.add(name + "=" + value + " is not a redis:// or rediss:// URL with a host");
        return "";
    }

    void problem(String message) {
        problems.add(message);
    }

    void check() {
        if (!problems.isEmpty()) {
            throw new ConfigException("bad broker settings: " + String.join("; ", problems));
        }
    }
}
