<?php
// A PHP application's session use, for test_php_failover.sh. The session
// handler is whatever php.ini says (the test passes
// -d session.save_handler=memcached -d session.save_path=HOST:PORT and
// leaves every memcached.sess_* setting at its default: binary protocol,
// locking). Prints one JSON line describing the session after the action.
//
//   php session_app.php login            new session: user=alice, counter=1
//   php session_app.php incr SID         counter+1; fails if the session is gone
//   php session_app.php peek SID         reads without writing (read_and_close)
//   php session_app.php logout SID       session_destroy()
//
// Exit 0 on success, 3 when the session did not hold what the action needs,
// 4 when the session could not be started or saved.

ini_set('session.use_cookies', '0');
ini_set('session.use_only_cookies', '0');
ini_set('session.cache_limiter', '');
ini_set('display_errors', 'stderr');
error_reporting(E_ALL);

function out(array $a): void { echo json_encode($a), "\n"; }

$action = $argv[1] ?? '';
$sid = $argv[2] ?? '';
if ($action !== 'login') {
    if ($sid === '') { fwrite(STDERR, "usage: session_app.php ACTION SID\n"); exit(2); }
    session_id($sid);
}

$opts = $action === 'peek' ? ['read_and_close' => true] : [];
if (!session_start($opts)) { fwrite(STDERR, "session_start failed\n"); exit(4); }

switch ($action) {
case 'login':
    session_regenerate_id();
    $_SESSION['user'] = 'alice';
    $_SESSION['counter'] = 1;
    $_SESSION['cart'] = str_repeat('x', 2000);   // a payload larger than a packet's worth of keys
    break;
case 'incr':
    if (!isset($_SESSION['counter'], $_SESSION['user'])) {
        out(['sid' => session_id(), 'error' => 'session empty']);
        session_abort();   // else the empty session would be written back
        exit(3);
    }
    $_SESSION['counter']++;
    break;
case 'peek':
    out(['sid' => session_id(), 'user' => $_SESSION['user'] ?? null,
         'counter' => $_SESSION['counter'] ?? null]);
    exit(0);
case 'logout':
    $_SESSION = [];
    if (!session_destroy()) { fwrite(STDERR, "session_destroy failed\n"); exit(4); }
    out(['sid' => $sid, 'destroyed' => true]);
    exit(0);
default:
    fwrite(STDERR, "unknown action '$action'\n");
    exit(2);
}

$result = ['sid' => session_id(), 'user' => $_SESSION['user'], 'counter' => $_SESSION['counter']];
if (!session_write_close()) { fwrite(STDERR, "session_write_close failed\n"); exit(4); }
out($result);
