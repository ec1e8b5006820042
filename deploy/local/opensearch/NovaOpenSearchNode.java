/*
 * Launcher for the single local OpenSearch node of deploy/local/stack.py.
 *
 * OpenSearch publishes its server and modules to Maven Central as plain jars,
 * but not its distribution (bin/, config/, modules/ folders). This class
 * starts a Node straight from those jars: the modules the project needs are
 * handed to the node as "classpath plugins", the same way OpenSearch's own
 * test framework does it, so no plugin folders or descriptors are needed.
 *
 * Usage (stack.py builds this command line):
 *   java -cp 'classes:libs/*' NovaOpenSearchNode key=value ...
 * Every key=value argument is a node setting (path.home is required). The
 * process runs until it gets SIGTERM/SIGINT, then closes the node cleanly.
 */

import java.nio.file.Path;
import java.util.Arrays;
import java.util.Collection;
import java.util.Collections;
import java.util.List;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;

import org.apache.logging.log4j.LogManager;
import org.apache.logging.log4j.core.LoggerContext;
import org.apache.logging.log4j.core.config.Configurator;
import org.opensearch.analysis.common.CommonAnalysisPlugin;
import org.opensearch.common.logging.LogConfigurator;
import org.opensearch.common.settings.Settings;
import org.opensearch.env.Environment;
import org.opensearch.node.InternalSettingsPreparer;
import org.opensearch.node.Node;
import org.opensearch.painless.PainlessPlugin;
import org.opensearch.plugins.Plugin;
import org.opensearch.transport.Netty4Plugin;

public final class NovaOpenSearchNode extends Node {

    /** Modules loaded into the node: HTTP/transport, analyzers (cjk, english...), Painless. */
    private static final List<Class<? extends Plugin>> MODULES = Arrays.asList(
        Netty4Plugin.class,
        CommonAnalysisPlugin.class,
        PainlessPlugin.class
    );

    private NovaOpenSearchNode(Environment environment, Collection<Class<? extends Plugin>> plugins) {
        // forbidPrivateIndexSettings=true: behave like a production node.
        super(environment, plugins, true);
    }

    public static void main(String[] args) throws Exception {
        Settings.Builder builder = Settings.builder();
        for (String arg : args) {
            int eq = arg.indexOf('=');
            if (eq <= 0) {
                System.err.println("expected key=value, got: " + arg);
                System.exit(2);
            }
            builder.put(arg.substring(0, eq), arg.substring(eq + 1));
        }
        Settings settings = builder.build();
        String home = settings.get("path.home");
        if (home == null) {
            System.err.println("path.home=<folder> is required");
            System.exit(2);
        }

        // Log4j reads <path.home>/config/log4j2.properties (written by stack.py).
        LogConfigurator.registerErrorListener();
        Path configDir = Path.of(home, "config");
        Environment environment = InternalSettingsPreparer.prepareEnvironment(
            settings, Collections.emptyMap(), configDir, () -> settings.get("node.name", "nova-local"));
        LogConfigurator.setNodeName(Node.NODE_NAME_SETTING.get(environment.settings()));
        LogConfigurator.configure(environment);

        NovaOpenSearchNode node = new NovaOpenSearchNode(environment, MODULES);
        CountDownLatch stopped = new CountDownLatch(1);
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            try {
                node.close();
                node.awaitClose(20, TimeUnit.SECONDS);
            } catch (Exception e) {
                e.printStackTrace();
            } finally {
                stopped.countDown();
                Configurator.shutdown((LoggerContext) LogManager.getContext(false));
            }
        }, "nova-opensearch-shutdown"));

        node.start();
        // Node threads are daemon threads: keep the JVM up until shutdown.
        stopped.await();
    }
}
