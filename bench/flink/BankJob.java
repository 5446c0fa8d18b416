// The bank, as a Flink job: the peer that `cairn bench` is compared with.
// Run it through `bench/flink/run.sh`; see BENCHMARKS.md ("A peer: Flink").
//
// A parallel source makes transfers (from, to, amount); keyBy takes each to
// its destination account over the network; a keyed balance in ValueState is
// credited; a discarding sink ends it. Everything runs in this JVM: a local
// cluster of `parallelism` task managers with one slot each.
//
// Prints one JSON line: records/s and CPU per record over `seconds` after a
// `warmup`, and the checkpoints completed in that window (trigger to
// completion as the first balance task is told of it).

import java.lang.management.ManagementFactory;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.ConcurrentLinkedQueue;
import java.util.concurrent.atomic.LongAdder;

import org.apache.flink.api.common.functions.MapFunction;
import org.apache.flink.api.common.state.CheckpointListener;
import org.apache.flink.api.common.state.ValueState;
import org.apache.flink.api.common.state.ValueStateDescriptor;
import org.apache.flink.api.common.typeinfo.Types;
import org.apache.flink.api.java.tuple.Tuple3;
import org.apache.flink.configuration.Configuration;
import org.apache.flink.configuration.TaskManagerOptions;
import org.apache.flink.core.execution.CheckpointingMode;
import org.apache.flink.core.execution.JobClient;
import org.apache.flink.runtime.state.FunctionInitializationContext;
import org.apache.flink.runtime.state.FunctionSnapshotContext;
import org.apache.flink.streaming.api.checkpoint.CheckpointedFunction;
import org.apache.flink.streaming.api.environment.StreamExecutionEnvironment;
import org.apache.flink.streaming.api.functions.KeyedProcessFunction;
import org.apache.flink.streaming.api.functions.sink.v2.DiscardingSink;
import org.apache.flink.util.Collector;

public class BankJob {
    static final LongAdder CREDITED = new LongAdder();
    static final Map<Long, Long> TRIGGERED = new ConcurrentHashMap<>();
    static final ConcurrentLinkedQueue<Long> CHECKPOINT_MS = new ConcurrentLinkedQueue<>();

    /** A transfer of `f2` from account `f0` to account `f1`. */
    static final class Transfer implements MapFunction<Long, Tuple3<Integer, Integer, Long>> {
        private final int accounts;

        Transfer(int accounts) {
            this.accounts = accounts;
        }

        @Override
        public Tuple3<Integer, Integer, Long> map(Long n) {
            long h = n * 0x9E3779B97F4A7C15L;
            int from = (int) Long.remainderUnsigned(h, accounts);
            int to = (int) Long.remainderUnsigned(h >>> 20, accounts);
            return Tuple3.of(from, to, 1 + Long.remainderUnsigned(h >>> 40, 10));
        }
    }

    /** Credits each account's balance, and times checkpoints at subtask 0. */
    static final class Balance
            extends KeyedProcessFunction<Integer, Tuple3<Integer, Integer, Long>, Long>
            implements CheckpointedFunction, CheckpointListener {
        private transient ValueState<Long> balance;

        @Override
        public void open(org.apache.flink.api.common.functions.OpenContext ctx) {
            balance = getRuntimeContext().getState(new ValueStateDescriptor<>("balance", Types.LONG));
        }

        @Override
        public void processElement(Tuple3<Integer, Integer, Long> t, Context ctx, Collector<Long> out)
                throws Exception {
            Long b = balance.value();
            long now = (b == null ? 1000L : b) + t.f2;
            balance.update(now);
            CREDITED.increment();
            out.collect(now);
        }

        private boolean timing() {
            return getRuntimeContext().getTaskInfo().getIndexOfThisSubtask() == 0;
        }

        @Override
        public void snapshotState(FunctionSnapshotContext ctx) {
            if (timing()) {
                TRIGGERED.put(ctx.getCheckpointId(), ctx.getCheckpointTimestamp());
            }
        }

        @Override
        public void initializeState(FunctionInitializationContext ctx) {}

        @Override
        public void notifyCheckpointComplete(long id) {
            Long at = TRIGGERED.remove(id);
            if (at != null) {
                CHECKPOINT_MS.add(System.currentTimeMillis() - at);
            }
        }
    }

    /** The `p` quantile of `sorted` as JSON: a number, or null when empty. */
    static String percentile(List<Long> sorted, double p) {
        if (sorted.isEmpty()) {
            return "null";
        }
        int i = (int) Math.ceil(p * sorted.size()) - 1;
        return Long.toString(sorted.get(Math.max(0, Math.min(i, sorted.size() - 1))));
    }

    public static void main(String[] args) throws Exception {
        if (args.length < 1 || !List.of("off", "aligned", "unaligned").contains(args[0])) {
            System.err.println("usage: BankJob off|aligned|unaligned [interval_ms] [seconds] [warmup_s] [parallelism] [accounts]");
            System.exit(2);
        }
        String variant = args[0];
        long interval = args.length > 1 ? Long.parseLong(args[1]) : 100;
        int seconds = args.length > 2 ? Integer.parseInt(args[2]) : 20;
        int warmup = args.length > 3 ? Integer.parseInt(args[3]) : 5;
        int parallelism = args.length > 4 ? Integer.parseInt(args[4]) : 4;
        int accounts = args.length > 5 ? Integer.parseInt(args[5]) : 1000;

        Configuration conf = new Configuration();
        conf.set(TaskManagerOptions.MINI_CLUSTER_NUM_TASK_MANAGERS, parallelism);
        conf.set(TaskManagerOptions.NUM_TASK_SLOTS, 1);
        StreamExecutionEnvironment env =
                StreamExecutionEnvironment.createLocalEnvironment(parallelism, conf);
        if (!variant.equals("off")) {
            env.enableCheckpointing(interval, CheckpointingMode.EXACTLY_ONCE);
            env.getCheckpointConfig().enableUnalignedCheckpoints(variant.equals("unaligned"));
        }
        env.fromSequence(0, Long.MAX_VALUE)
                .map(new Transfer(accounts))
                .returns(Types.TUPLE(Types.INT, Types.INT, Types.LONG))
                .keyBy(t -> t.f1)
                .process(new Balance())
                .sinkTo(new DiscardingSink<>());

        com.sun.management.OperatingSystemMXBean os =
                (com.sun.management.OperatingSystemMXBean) ManagementFactory.getOperatingSystemMXBean();
        JobClient job = env.executeAsync("cairn-bank-" + variant);
        Thread.sleep(warmup * 1000L);
        long records0 = CREDITED.sum();
        long cpu0 = os.getProcessCpuTime();
        long t0 = System.nanoTime();
        CHECKPOINT_MS.clear();
        Thread.sleep(seconds * 1000L);
        long records = CREDITED.sum() - records0;
        long cpu = os.getProcessCpuTime() - cpu0;
        double elapsed = (System.nanoTime() - t0) / 1e9;
        List<Long> ms = new ArrayList<>(CHECKPOINT_MS);
        Collections.sort(ms);
        job.cancel().get();
        System.out.printf(
                "{\"variant\":\"%s\",\"interval_ms\":%d,\"parallelism\":%d,\"seconds\":%.1f,"
                        + "\"records\":%d,\"records_per_s\":%.0f,\"cpu_ns_per_record\":%.0f,"
                        + "\"checkpoints\":%d,\"checkpoint_p50_ms\":%s,\"checkpoint_p99_ms\":%s}%n",
                variant, interval, parallelism, elapsed, records, records / elapsed,
                records == 0 ? 0.0 : (double) cpu / records, ms.size(),
                percentile(ms, 0.50), percentile(ms, 0.99));
        System.exit(0);
    }
}
