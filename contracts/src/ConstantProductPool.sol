// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {IERC20, SafeTransfer} from "./IERC20.sol";

/// @title ConstantProductPool
/// @notice A Uniswap-V2-style x*y=k pool of two tokens with a fee in basis points taken
/// from the input:
///     out = in*(10000-fee)*rOut / (rIn*10000 + in*(10000-fee))
///     in  = rIn*out*10000 / ((rOut-out)*(10000-fee)) + 1
/// `app.domain.amm.constant_product` is the exact Python twin of `getAmountOut` and
/// `getAmountIn`.
/// @dev Reserves are tracked internally (not read with balanceOf), so tokens sent to the
/// pool outside `swap`/`addLiquidity` do not move its price. Both reserves share one
/// storage slot (uint128 each). Liquidity shares are an internal ledger, not an ERC-20.
/// Tokens must not take a fee on transfer.
contract ConstantProductPool {
    using SafeTransfer for address;

    uint256 private constant _BPS = 10_000;
    uint256 public constant MAX_FEE_BPS = 1_000;
    // keccak256("crossbook.pool.lock"): transient reentrancy flag (EIP-1153, cheaper than storage).
    bytes32 private constant _LOCK_SLOT = 0xb1fead9d3d4ffc410a0f141bcb8e70c0d2f04d16c791dc89a851ea9b7f6d98d3;

    address public immutable token0;
    address public immutable token1;
    uint256 public immutable feeBps;

    uint128 private _reserve0;
    uint128 private _reserve1;
    uint256 public totalSupply;
    mapping(address owner => uint256) public sharesOf;

    event Swap(
        address indexed sender, address indexed tokenIn, uint256 amountIn, uint256 amountOut, address indexed recipient
    );
    event Sync(uint256 reserve0, uint256 reserve1);
    event Mint(address indexed sender, address indexed to, uint256 amount0, uint256 amount1, uint256 shares);
    event Burn(address indexed sender, address indexed to, uint256 amount0, uint256 amount1, uint256 shares);

    error InvalidToken(address token);
    error IdenticalTokens();
    error FeeTooHigh(uint256 feeBps);
    error ZeroAmount();
    error ZeroOutput();
    error InsufficientLiquidity();
    error SlippageExceeded(uint256 amountOut, uint256 minAmountOut);
    error ReserveOverflow();
    error ZeroShares();
    error InsufficientShares(uint256 balance, uint256 needed);
    error Reentrancy();

    modifier nonReentrant() {
        bool locked;
        assembly ("memory-safe") {
            locked := tload(_LOCK_SLOT)
        }
        if (locked) revert Reentrancy();
        assembly ("memory-safe") {
            tstore(_LOCK_SLOT, 1)
        }
        _;
        assembly ("memory-safe") {
            tstore(_LOCK_SLOT, 0)
        }
    }

    constructor(address token0_, address token1_, uint256 feeBps_) {
        if (token0_ == address(0) || token1_ == address(0)) revert InvalidToken(address(0));
        if (token0_ == token1_) revert IdenticalTokens();
        if (feeBps_ > MAX_FEE_BPS) revert FeeTooHigh(feeBps_);
        token0 = token0_;
        token1 = token1_;
        feeBps = feeBps_;
    }

    // ---------------------------------------------------------------- views

    function getReserves() external view returns (uint256 reserve0, uint256 reserve1) {
        return (_reserve0, _reserve1);
    }

    /// @notice Output for selling `amountIn` of `tokenIn` now (0 for a zero input).
    function getAmountOut(address tokenIn, uint256 amountIn) external view returns (uint256) {
        (uint256 rIn, uint256 rOut) = _reservesFor(_isToken0(tokenIn));
        return _amountOut(amountIn, rIn, rOut);
    }

    /// @notice Input of `tokenIn` that buys at least `amountOut` of the other token (0 for 0).
    function getAmountIn(address tokenIn, uint256 amountOut) external view returns (uint256) {
        (uint256 rIn, uint256 rOut) = _reservesFor(_isToken0(tokenIn));
        if (rIn == 0 || rOut == 0) revert InsufficientLiquidity();
        if (amountOut == 0) return 0;
        if (amountOut >= rOut) revert InsufficientLiquidity();
        return rIn * amountOut * _BPS / ((rOut - amountOut) * (_BPS - feeBps)) + 1;
    }

    // ---------------------------------------------------------------- trading

    /// @notice Sell `amountIn` of `tokenIn` (pulled from the caller with transferFrom) and
    /// pay the output to `recipient`; reverts with SlippageExceeded below `minAmountOut`.
    function swap(address tokenIn, uint256 amountIn, uint256 minAmountOut, address recipient)
        external
        nonReentrant
        returns (uint256 amountOut)
    {
        if (amountIn == 0) revert ZeroAmount();
        bool zeroForOne = _isToken0(tokenIn);
        (uint256 rIn, uint256 rOut) = _reservesFor(zeroForOne);
        amountOut = _amountOut(amountIn, rIn, rOut);
        if (amountOut == 0) revert ZeroOutput();
        if (amountOut < minAmountOut) revert SlippageExceeded(amountOut, minAmountOut);
        // State first, tokens after (checks-effects-interactions; the lock covers the rest).
        if (zeroForOne) {
            _setReserves(rIn + amountIn, rOut - amountOut);
        } else {
            _setReserves(rOut - amountOut, rIn + amountIn);
        }
        tokenIn.safeTransferFrom(msg.sender, address(this), amountIn);
        (zeroForOne ? token1 : token0).safeTransfer(recipient, amountOut);
        emit Swap(msg.sender, tokenIn, amountIn, amountOut, recipient);
    }

    // ---------------------------------------------------------------- liquidity

    /// @notice Deposit exactly `amount0` and `amount1`; shares follow the scarcer side, the
    /// excess of the other stays in the pool (and moves its price), as in Uniswap V2.
    function addLiquidity(uint256 amount0, uint256 amount1, address to)
        external
        nonReentrant
        returns (uint256 shares)
    {
        if (amount0 == 0 || amount1 == 0) revert ZeroAmount();
        (uint256 r0, uint256 r1) = (_reserve0, _reserve1);
        uint256 supply = totalSupply;
        if (supply == 0) {
            shares = _sqrt(amount0 * amount1);
        } else {
            uint256 s0 = amount0 * supply / r0;
            uint256 s1 = amount1 * supply / r1;
            shares = s0 < s1 ? s0 : s1;
        }
        if (shares == 0) revert ZeroShares();
        totalSupply = supply + shares;
        sharesOf[to] += shares;
        _setReserves(r0 + amount0, r1 + amount1);
        token0.safeTransferFrom(msg.sender, address(this), amount0);
        token1.safeTransferFrom(msg.sender, address(this), amount1);
        emit Mint(msg.sender, to, amount0, amount1, shares);
    }

    /// @notice Burn `shares` of the caller for a pro-rata part of both reserves, paid to `to`.
    function removeLiquidity(uint256 shares, address to)
        external
        nonReentrant
        returns (uint256 amount0, uint256 amount1)
    {
        if (shares == 0) revert ZeroAmount();
        uint256 owned = sharesOf[msg.sender];
        if (shares > owned) revert InsufficientShares(owned, shares);
        (uint256 r0, uint256 r1) = (_reserve0, _reserve1);
        uint256 supply = totalSupply;
        // Rounded down: a partial withdrawal always leaves both reserves non-zero.
        amount0 = shares * r0 / supply;
        amount1 = shares * r1 / supply;
        sharesOf[msg.sender] = owned - shares;
        totalSupply = supply - shares;
        _setReserves(r0 - amount0, r1 - amount1);
        token0.safeTransfer(to, amount0);
        token1.safeTransfer(to, amount1);
        emit Burn(msg.sender, to, amount0, amount1, shares);
    }

    // ---------------------------------------------------------------- internals

    function _amountOut(uint256 amountIn, uint256 rIn, uint256 rOut) private view returns (uint256) {
        if (rIn == 0 || rOut == 0) revert InsufficientLiquidity();
        if (amountIn == 0) return 0;
        uint256 inWithFee = amountIn * (_BPS - feeBps);
        return inWithFee * rOut / (rIn * _BPS + inWithFee);
    }

    function _isToken0(address token) private view returns (bool) {
        if (token == token0) return true;
        if (token == token1) return false;
        revert InvalidToken(token);
    }

    function _reservesFor(bool zeroForOne) private view returns (uint256 rIn, uint256 rOut) {
        (uint256 r0, uint256 r1) = (_reserve0, _reserve1);
        return zeroForOne ? (r0, r1) : (r1, r0);
    }

    function _setReserves(uint256 r0, uint256 r1) private {
        if (r0 > type(uint128).max || r1 > type(uint128).max) revert ReserveOverflow();
        _reserve0 = uint128(r0);
        _reserve1 = uint128(r1);
        emit Sync(r0, r1);
    }

    function _sqrt(uint256 x) private pure returns (uint256 z) {
        // Babylonian method from above: floor(sqrt(x)).
        if (x == 0) return 0;
        z = x;
        uint256 y = x / 2 + (x & 1); // ceil(x / 2) without overflow
        while (y < z) {
            z = y;
            y = (x / y + y) / 2;
        }
    }
}
